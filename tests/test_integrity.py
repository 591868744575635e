"""Nothing a user writes stops the dispatcher, and no paid report is lost, cut or given to the wrong job (issue 17).

Real processes: the emulator, `research worker` (with its embedded dispatch tick), `research run`, and the
embedded SQLite database and broker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text, update
from sqlmodel import col

from research_runner import broker, db, lifecycle, store
from research_runner.cli import cli
from research_runner.gateway import Gateway
from research_runner.models import Schedule
from research_runner.settings import Settings, load_settings
from research_runner.status import JobStatus, utcnow

from conftest import create_job, settings_from, wait_for


@pytest.fixture
def settings(runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    return settings_from(runner_env, monkeypatch)


def invoke(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def _status(settings: Settings, job_id: str, *statuses: str) -> Any:
    job = store.load(settings, job_id)
    return job if job is not None and job.status in statuses else None


def _gets(emulator: Any) -> int:
    return sum(emulator.stats()["requests"].get("get", {}).values())


def test_a_broken_schedule_costs_healthy_jobs_nothing_and_is_paused_with_its_reason(
    runner_env: dict[str, str], settings: Settings, start_worker: Any
) -> None:
    added = invoke(runner_env, "schedule", "add", "broken", "--cron", "0 9 * * 1", "--query", "Weekly news")
    assert added.exit_code == 0, added.output
    with db.session(settings) as session:  # stored by an older version: a cron that can never fire
        session.execute(text("UPDATE schedules SET cron = '0 9 30 2 *', next_run_at = :due"), {"due": utcnow()})
    fine = invoke(
        runner_env, "schedule", "add", "fine", "--cron", "0 9 * * 1", "--query", "Fine [[emulator duration=0]]"
    )
    assert fine.exit_code == 0, fine.output
    _due_now(settings, "fine")  # beside the broken one
    healthy = create_job(settings, "Still answered? [[emulator duration=0.3]]")
    store.transition(settings, healthy.id, [JobStatus.QUEUED], lease_until=None)
    worker = start_worker(runner_env)

    completed = wait_for(lambda: _status(settings, healthy.id, JobStatus.COMPLETED), 60, "the healthy job")
    assert completed, worker.log()
    for attempt in range(1, 4):  # each failed firing is recorded; the third pauses the schedule
        failed = wait_for(lambda n=attempt: _schedule(settings, n), 30, f"failed firing {attempt}")  # type: ignore[misc]
        if attempt < 3:
            with db.session(settings) as session:
                session.execute(
                    text("UPDATE schedules SET next_run_at = :due WHERE name = 'broken'"), {"due": utcnow()}
                )
    assert failed.paused and failed.last_error.startswith("paused after 3 failed firings in a row")
    shown = invoke(runner_env, "schedule", "show", "broken").output
    assert "paused after 3 failed firings" in shown
    doctor = invoke(runner_env, "doctor").output
    assert "FAIL schedule broken: 3 failed firing(s)" in doctor
    assert "schedule fired: batch" in worker.log() and "(fine " in worker.log(), "one log line per firing"
    routine = re.findall(r"INFO/Beat\] dispatch tick: dispatched \d+\n", worker.log())
    assert routine == [], "handing out steps alone is not logged at INFO"


def _due_now(settings: Settings, name: str) -> None:
    # Through the model's column type: SQLite compares the stored text, so it must be written the same way.
    with db.session(settings) as session:
        session.execute(update(Schedule).where(col(Schedule.name) == name).values(next_run_at=utcnow()))


def _schedule(settings: Settings, failures: int) -> Schedule | None:
    with db.session(settings) as session:
        found = session.get(
            Schedule, session.execute(text("SELECT id FROM schedules WHERE name = 'broken'")).scalar_one()
        )
    return found if found is not None and found.failures >= failures else None


def test_a_report_that_cannot_be_written_is_kept_and_written_later_without_asking_the_api_again(
    runner_env: dict[str, str], settings: Settings, start_worker: Any, emulator: Any
) -> None:
    reports_dir = Path(runner_env["RESEARCH_REPORTS_DIR"])
    shutil.rmtree(reports_dir)
    reports_dir.write_text("a file where the folder should be")  # as good as a read-only or full disk, even for root
    job = create_job(settings, "Paid for already [[emulator duration=0.3 charts=1]]")
    store.transition(settings, job.id, [JobStatus.QUEUED], lease_until=None)
    worker = start_worker(runner_env)

    done = wait_for(lambda: _status(settings, job.id, JobStatus.COMPLETED), 60, "the job to complete"), worker.log()
    finished = done[0]
    assert finished.report_path is None and finished.report_markdown and finished.next_poll_at is None
    assert finished.report_error.startswith("report not written: ")
    status = invoke(runner_env, "status", job.id).output
    assert "report problem: report not written" in status
    assert "FAIL reports waiting: 1 finished job(s) wait for their report file" in invoke(runner_env, "doctor").output
    gets = _gets(emulator)

    reports_dir.unlink()  # the folder can be written again: the dispatch tick writes report and chart
    written = wait_for(lambda: _written(settings, job.id), 30, "the report to be written")
    assert Path(written.report_path).read_text() == written.report_markdown
    figures = json.loads(written.figures)
    assert len(figures) == 1 and Path(figures[0]).read_bytes().startswith(b"\x89PNG")
    assert _gets(emulator) == gets, "the stored outcome is written without asking the API again"


def _written(settings: Settings, job_id: str) -> Any:
    job = store.load(settings, job_id)
    return job if job is not None and job.report_path and job.report_error is None else None


def test_an_interaction_labelled_for_another_job_is_never_stored_on_this_one(settings: Settings, emulator: Any) -> None:
    gateway = Gateway(settings)
    mine, other = (create_job(settings, f"{q} [[emulator duration=0]]") for q in ("Mine", "Someone else's"))
    for job in (mine, other):
        lifecycle.start(settings, gateway, job.id)
    theirs = store.load(settings, other.id)
    assert theirs is not None and theirs.interaction_id
    # As when another endpoint (or a restarted emulator) hands out an id this job once had.
    store.transition(settings, mine.id, [JobStatus.RUNNING], interaction_id=theirs.interaction_id)

    lifecycle.poll(settings, gateway, mine.id)

    stored = store.load(settings, mine.id)
    assert stored is not None and stored.status == JobStatus.NEEDS_ATTENTION
    assert stored.report_markdown is None and stored.error is not None
    assert f"belongs to job {other.id[:8]}" in stored.error


def test_a_job_is_only_polled_through_the_endpoint_that_created_it(settings: Settings, emulator: Any) -> None:
    gateway = Gateway(settings)
    job = create_job(settings, "Where do I live? [[emulator duration=600]]")
    lifecycle.start(settings, gateway, job.id)
    store.transition(settings, job.id, [JobStatus.RUNNING], api_endpoint="http://127.0.0.1:9")  # a gone emulator

    lifecycle.poll(settings, gateway, job.id)

    stored = store.load(settings, job.id)
    assert stored is not None and stored.status == JobStatus.NEEDS_ATTENTION
    assert stored.error is not None and "lives at http://127.0.0.1:9" in stored.error
    cancelled = lifecycle.cancel(settings, job.id, lambda: gateway)
    assert cancelled.status == JobStatus.CANCELLED
    assert cancelled.error is not None and "was not contacted" in cancelled.error


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_killed_run_leaves_its_job_in_a_true_state(
    runner_env: dict[str, str], settings: Settings, signum: signal.Signals
) -> None:
    env = {k: v for k, v in {**os.environ, **runner_env}.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    run = subprocess.Popen(
        [sys.executable, "-m", "research_runner", "run", "Never ends [[emulator outcome=stuck]]"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        job = wait_for(lambda: _running(settings), 30, "the run's job to start")
        run.send_signal(signum)
        assert run.wait(timeout=30) != 0
    finally:
        run.kill()
        run.communicate()
    ended = store.load(settings, job.id)
    assert ended is not None and ended.status == JobStatus.CANCELLED
    assert ended.error == "interrupted; the private emulator stopped with `research run`"


def _running(settings: Settings) -> Any:
    found = store.list_jobs(settings, JobStatus.RUNNING)
    return found[0] if found else None


def test_bulk_retry_recovers_every_job_waiting_on_the_user_once(runner_env: dict[str, str], settings: Settings) -> None:
    stuck = [create_job(settings, f"Burst {n}") for n in range(3)]
    for job in stuck:
        store.transition(settings, job.id, [JobStatus.QUEUED], status=JobStatus.NEEDS_ATTENTION, lease_until=None)

    result = invoke(runner_env, "retry", "--status", "needs_attention", "--json")

    assert result.exit_code == 0, result.output
    retries = json.loads(result.stdout)
    assert sorted(r["retry_of"] for r in retries) == sorted(job.id for job in stuck)
    assert all(r["status"] == "queued" for r in retries)
    again = invoke(runner_env, "retry", "--status", "needs_attention")
    assert (again.exit_code, again.stderr) == (
        2,
        "Error: no job to retry: name jobs, or a --status/--batch that has some not retried yet\n",
    )


def test_the_embedded_broker_forgets_delivered_messages(
    runner_env: dict[str, str], settings: Settings, start_worker: Any
) -> None:
    jobs = [create_job(settings, f"Message {n} [[emulator duration=0.3]]") for n in range(3)]
    for job in jobs:
        store.transition(settings, job.id, [JobStatus.QUEUED], lease_until=None)
    worker = start_worker(runner_env)
    for job in jobs:
        ended = wait_for(lambda j=job: _status(settings, j.id, JobStatus.COMPLETED), 60, "the jobs")  # type: ignore[misc]
        assert ended, worker.log()
    worker.stop()
    assert " failed" not in worker.log(), "the worker's broker connections work in beat's process too"
    assert _delivered(settings) > 0, "kombu keeps every delivered message"

    assert broker.purge_delivered(settings, force=True) > 0
    assert _delivered(settings) == 0


def _delivered(settings: Settings) -> int:
    return _messages(settings, "WHERE visible = 0")


def _messages(settings: Settings, where: str = "") -> int:
    """Messages in the embedded broker's table (`where`: which)."""
    from sqlalchemy import create_engine

    engine = create_engine(settings.broker_url.removeprefix("sqla+"))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM kombu_message {where}")).scalar_one())
    finally:
        engine.dispose()


# One sender of test_processes_sending_to_a_fresh_embedded_broker_at_once_all_succeed: imported and connected,
# it says "ready", then sends as soon as the go file appears.
SENDER = """
import os, sys, time
from research_runner import worker
from research_runner.settings import load_settings
settings = load_settings()
settings.ensure_dirs()  # as every command does
app = worker.create_app(settings)
print("ready", flush=True)
deadline = time.monotonic() + 30
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    pass
worker.enqueue(app, settings, sys.argv[2], "Sent at once")
"""
SENDERS = 6


@pytest.mark.parametrize("round_", range(3))
def test_processes_sending_to_a_fresh_embedded_broker_at_once_all_succeed(
    runner_env: dict[str, str], tmp_path: Path, round_: int
) -> None:
    go = tmp_path / "go"
    senders = [
        subprocess.Popen([sys.executable, "-c", SENDER, str(go), f"job-{n}"], env={**os.environ, **runner_env},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(SENDERS)
    ]  # fmt: skip
    for sender in senders:
        assert sender.stdout is not None and sender.stdout.readline() == "ready\n", sender.communicate()
    go.touch()
    errors = [sender.communicate(timeout=60)[1] for sender in senders]
    assert [sender.returncode for sender in senders] == [0] * SENDERS, errors
    settings = load_settings(data_dir=Path(runner_env["RESEARCH_DATA_DIR"]))
    assert _messages(settings) == SENDERS


def test_a_step_that_fails_for_one_job_is_noted_on_its_row_and_costs_the_others_nothing(
    settings: Settings, emulator: Any
) -> None:
    good, bad = (create_job(settings, f"{q} [[emulator duration=600]]") for q in ("Fine", "Corrupted"))
    with db.session(settings) as session:  # a row no version could read
        session.execute(text("UPDATE jobs SET agent_config = '{oops' WHERE id = :id"), {"id": bad.id})

    with pytest.raises(json.JSONDecodeError):
        lifecycle.start_many(settings, Gateway(settings), [bad.id, good.id])

    started, broken = store.load(settings, good.id), store.load(settings, bad.id)
    assert started is not None and started.status == JobStatus.RUNNING
    assert broken is not None and broken.error is not None and broken.error.startswith("a step failed")
