"""Steps go out in batches: one message for several jobs, their API calls overlapping; polls load in one query."""

from __future__ import annotations

import base64
import gc
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from research_runner import leases, lifecycle, outcome, store, worker
from research_runner.gateway import Gateway
from research_runner.models import Job, JobTurn
from research_runner.settings import Settings
from research_runner.status import ACTIVE_STATUSES, REMOTE_RUNNING, JobStatus, utcnow
from research_runner.worker import (
    JOBS_PER_MESSAGE,
    QUEUES,
    TASK_POLL,
    TASK_SUBMIT,
    create_app,
    enqueue,
    task_label,
    waiting_jobs,
)

from conftest import create_job, settings_from, wait_for

AGENT = "deep-research-pro-preview-12-2025"


@pytest.fixture
def env(runner_env: dict[str, str], postgres_settings_env: dict[str, str], redis_url: str) -> dict[str, str]:
    return {**runner_env, **postgres_settings_env, "RESEARCH_BROKER_URL": redis_url}


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    return settings_from(env, monkeypatch)


def _all_ended(settings: Settings, ids: list[str]) -> list[Job] | None:
    found = store.load_many(settings, ids)
    return found if len(found) == len(ids) and all(job.status not in ACTIVE_STATUSES for job in found) else None


def _running(settings: Settings, gateway: Gateway, question: str) -> str:
    job = create_job(settings, question, AGENT)
    lifecycle.start(settings, gateway, job.id)
    started = store.load(settings, job.id)
    assert started is not None and started.status == JobStatus.RUNNING, started
    return job.id


def test_poll_many_records_each_job_and_skips_what_it_cannot_poll(settings: Settings) -> None:
    gateway = Gateway(settings)
    done = _running(settings, gateway, "Ends at once [[emulator duration=0]]")
    busy = _running(settings, gateway, "Runs on [[emulator duration=600]]")
    failed = _running(settings, gateway, "Fails [[emulator outcome=failed duration=0]]")
    queued = create_job(settings, "Not started yet", AGENT).id

    with ThreadPoolExecutor(max_workers=JOBS_PER_MESSAGE) as threads:
        polled = lifecycle.poll_many(settings, gateway, [done, "no-such-job", busy, queued, failed], threads.map)

    assert list(polled) == [done, "no-such-job", busy, queued, failed]
    assert polled["no-such-job"] is None and polled[queued] is None
    statuses = {job_id: p.remote_status for job_id, p in polled.items() if p}
    assert statuses.pop(busy) in REMOTE_RUNNING and statuses == {done: "completed", failed: "failed"}
    stored = {job.id: job for job in store.load_many(settings, [done, busy, failed, queued])}
    assert stored[done].status == JobStatus.COMPLETED and stored[done].report_path
    assert stored[failed].status == JobStatus.FAILED and stored[failed].report_path is None
    assert stored[busy].status == JobStatus.RUNNING and stored[busy].poll_count == 1
    next_poll = stored[busy].next_poll_at
    assert next_poll is not None and next_poll > utcnow()
    assert stored[queued].status == JobStatus.QUEUED and stored[queued].poll_count == 0


def _queued_messages(settings: Settings) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(settings.broker_url)
    messages = [json.loads(raw) for queue in QUEUES for raw in reversed(client.lrange(queue, 0, -1))]
    return [
        {
            "task": m["headers"]["task"],
            "argsrepr": m["headers"]["argsrepr"],
            "args": json.loads(base64.b64decode(m["body"]))[0],
        }
        for m in messages
    ]


def _left_for_the_dispatcher(settings: Settings, questions: list[str]) -> list[str]:
    """Queued jobs, due and not held, so the dispatcher hands their creates out in batches."""
    ids = [create_job(settings, question, AGENT).id for question in questions]
    for job_id in ids:
        assert store.transition(settings, job_id, [JobStatus.QUEUED], lease_until=None)
    return ids


def test_the_dispatcher_sends_due_creates_and_polls_in_batches(settings: Settings) -> None:
    gateway = Gateway(settings)
    running = [
        _running(settings, gateway, f"Question {n} [[emulator duration=600]]") for n in range(JOBS_PER_MESSAGE + 2)
    ]
    queued = [create_job(settings, f"Waiting {n}", AGENT).id for n in range(3)]
    for job_id in running + queued:  # all due now, none handed out
        assert store.transition(
            settings,
            job_id,
            [JobStatus.RUNNING, JobStatus.QUEUED],
            lease_until=None,
            next_poll_at=utcnow() - timedelta(seconds=1),
        )

    result = create_app(settings).research_dispatch()

    assert result.dispatched == len(running) + len(queued)
    sent = _queued_messages(settings)
    assert [m["task"] for m in sent] == [TASK_POLL, TASK_POLL, TASK_SUBMIT]  # polls are due now and quick
    assert sorted(sent[2]["args"][0]) == sorted(queued)
    batches = [m["args"][0] for m in sent[:2]]
    assert [len(b) for b in batches] == [JOBS_PER_MESSAGE, 2] and sorted(batches[0] + batches[1]) == sorted(running)
    questions = {job.id: job.question for job in store.load_many(settings, running + queued)}
    for message in sent:
        assert message["argsrepr"] == task_label([(job_id, questions[job_id]) for job_id in message["args"][0]])


def test_a_worker_creates_and_polls_a_batch_to_the_end(
    env: dict[str, str], settings: Settings, start_worker: Any, emulator: Any
) -> None:
    ids = _left_for_the_dispatcher(
        settings, [f"Batch job {n} [[emulator duration=0.5]]" for n in range(JOBS_PER_MESSAGE + 3)]
    )
    worker = start_worker(env)
    ended = wait_for(lambda: _all_ended(settings, ids), 60, "every job of the batch to end")
    assert {job.status for job in ended} == {JobStatus.COMPLETED}, worker.log()
    assert emulator.stats()["interactions_created"] == len(ids)
    assert len({job.report_path for job in ended}) == len(ids)
    assert "Task research.submit" in worker.log() and "polled: completed" in worker.log()
    assert "concurrency: 4 (thread)" in worker.log()  # the default pool: one process holds every job in flight


def test_a_worker_reads_polls_and_creates_in_turn(
    env: dict[str, str], settings: Settings, start_worker: Any, emulator: Any
) -> None:
    gateway = Gateway(settings)
    running = [
        _running(settings, gateway, f"Polled {n} [[emulator duration=600]]") for n in range(2 * JOBS_PER_MESSAGE)
    ]
    app = create_app(settings)
    queued = [create_job(settings, f"Created {n} [[emulator duration=600]]", AGENT) for n in range(2)]
    for job in queued:  # two create messages are waiting first...
        enqueue(app, settings, job.id, job.question)
    for job_id in running:
        assert store.transition(settings, job_id, [JobStatus.RUNNING], next_poll_at=utcnow() - timedelta(seconds=1))
    assert app.research_dispatch().dispatched == len(running)  # ...then two poll messages

    worker = start_worker(env, "--concurrency", "1")
    wait_for(lambda: all(store.find(settings, j.id).status == JobStatus.RUNNING for j in queued), 30, "the creates")
    received = [
        line.split("Task ")[1].split("[")[0]
        for line in worker.log().splitlines()
        if " received" in line and "research.dispatch" not in line
    ]
    # Neither queue waits for the other to drain: a poll is read before the second create, and a create
    # before the second poll.
    assert sorted(received[:2]) == ["research.poll", "research.submit"], received


def test_the_dispatcher_hands_out_creates_under_their_own_budget(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from({**env, "RESEARCH_DISPATCH_CREATES": "3"}, monkeypatch)
    gateway = Gateway(settings)
    running = [_running(settings, gateway, f"Due {n} [[emulator duration=600]]") for n in range(2)]
    for job_id in running:  # due after every queued job below, so a shared limit would hand out creates only
        assert store.transition(settings, job_id, [JobStatus.RUNNING], next_poll_at=utcnow() - timedelta(seconds=1))
    queued = [create_job(settings, f"Waiting {n}", AGENT).id for n in range(5)]
    for job_id in queued:
        assert store.transition(
            settings, job_id, [JobStatus.QUEUED], lease_until=None, next_poll_at=utcnow() - timedelta(hours=1)
        )

    first = leases.claim_due(settings)
    second = leases.claim_due(settings)

    assert sorted(job_id for job_id, status, _ in first if status == JobStatus.RUNNING) == sorted(running)
    assert [status for _, status, _ in first].count(JobStatus.QUEUED) == 3
    assert sorted(job_id for job_id, _, _ in first + second) == sorted(running + queued)  # the rest, next tick


def test_a_poll_goes_out_up_to_half_a_tick_early_and_a_create_never(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from({**env, "RESEARCH_DISPATCH_INTERVAL": "2"}, monkeypatch)
    gateway = Gateway(settings)
    now = utcnow()
    soon, later = (_running(settings, gateway, f"Due {n} [[emulator duration=600]]") for n in range(2))
    queued = create_job(settings, "Waiting", AGENT).id
    for job_id, status, due in (
        (soon, JobStatus.RUNNING, 0.9),
        (later, JobStatus.RUNNING, 1.1),
        (queued, JobStatus.QUEUED, 0.1),
    ):
        assert store.transition(settings, job_id, [status], lease_until=None, next_poll_at=now + timedelta(seconds=due))

    # The tick of `now` rounds to the nearer tick: what is due within 1 s (half of 2) is handed out now.
    assert [job_id for job_id, _, _ in leases.claim_due(settings, now)] == [soon]
    assert sorted(job_id for job_id, _, _ in leases.claim_due(settings, now + timedelta(seconds=2))) == sorted(
        [later, queued]
    )


def test_a_poll_handed_out_early_still_waits_out_retry_after(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    settings = settings_from({**env, "RESEARCH_DISPATCH_INTERVAL": "2", "RESEARCH_POLL_MAX": "1"}, monkeypatch)
    job_id = _running(settings, Gateway(settings), "Refused [[emulator duration=600]]")
    emulator.set_faults({"get": {"429": 1.0}, "retry_after": 3})

    polled = lifecycle.poll_many(settings, Gateway(settings), [job_id])[job_id]
    assert polled is not None and polled.remote_status is None  # asked, and refused for now

    job = store.load(settings, job_id)
    assert job is not None and job.next_poll_at is not None and job.updated_at is not None
    assert "temporary API problem" in str(job.error)
    waits = (job.next_poll_at - job.updated_at).total_seconds()  # both written when the 429 came back
    assert waits - leases.poll_head_start(settings) > 2.99  # the earliest tick that hands it out is past Retry-After


def test_the_creates_budget_shrinks_while_steps_wait_in_the_broker(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from({**env, "RESEARCH_DISPATCH_CREATES": "8"}, monkeypatch)
    app = create_app(settings)
    _left_for_the_dispatcher(settings, [f"Queued {n}" for n in range(20)])
    assert waiting_jobs(app) == 0

    first = app.research_dispatch()  # nothing waits: the whole budget
    assert (first.creates_budget, first.dispatched) == (8, 8)
    assert waiting_jobs(app) == JOBS_PER_MESSAGE  # its one create message, unread (no worker runs)

    second = app.research_dispatch()  # a message waits: an eighth of the budget
    assert (second.creates_budget, second.dispatched) == (1, 1)
    assert waiting_jobs(app) == 2 * JOBS_PER_MESSAGE

    redis.Redis.from_url(settings.broker_url).flushdb()  # the workers caught up
    third = app.research_dispatch()
    assert (third.creates_budget, third.dispatched) == (8, 8)


def test_the_embedded_broker_counts_what_waits_too(runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from({**runner_env, "RESEARCH_DISPATCH_CREATES": "8"}, monkeypatch)
    assert settings.embedded
    app = create_app(settings)
    _left_for_the_dispatcher(settings, [f"Queued {n}" for n in range(12)])
    assert (app.research_dispatch().dispatched, waiting_jobs(app)) == (8, JOBS_PER_MESSAGE)
    assert app.research_dispatch().dispatched == 1


def _handed_out(settings: Settings, job_id: str, due_seconds_ago: float) -> None:
    """As a dispatcher leaves a poll it handed out and no worker has done yet."""
    assert store.transition(
        settings, job_id, [JobStatus.QUEUED, JobStatus.RUNNING], status=JobStatus.RUNNING,
        next_poll_at=utcnow() - timedelta(seconds=due_seconds_ago), lease_until=utcnow() + timedelta(seconds=60),
    )  # fmt: skip


def test_a_poll_behind_by_more_than_a_tick_halves_the_creates_cap(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker can be empty while a worker holds the messages it has read: the lag of the polls handed out is
    # what tells that the workers are behind.
    settings = settings_from({**env, "RESEARCH_DISPATCH_CREATES": "8"}, monkeypatch)
    app = create_app(settings)
    held = _running(settings, Gateway(settings), "Held [[emulator duration=600]]")
    _left_for_the_dispatcher(settings, [f"Queued {n}" for n in range(20)])
    _handed_out(settings, held, due_seconds_ago=3)

    behind = app.research_dispatch()
    assert behind.poll_lag == pytest.approx(3, abs=1) and waiting_jobs(app) == JOBS_PER_MESSAGE
    assert (behind.creates_cap, behind.dispatched) == (4, 4)  # halved, though the broker was empty

    redis.Redis.from_url(settings.broker_url).flushdb()  # the worker read the create message...
    assert (app.research_dispatch().creates_cap, app.research_dispatch().creates_cap) == (2, 1)  # ...not the poll

    assert store.transition(
        settings, held, [JobStatus.RUNNING], lease_until=None, next_poll_at=utcnow() + timedelta(seconds=60)
    )  # fmt: skip  (polled)
    redis.Redis.from_url(settings.broker_url).flushdb()
    caught_up = [app.research_dispatch() for _ in range(3)]
    assert [tick.poll_lag for tick in caught_up] == [0.0, 0.0, 0.0]
    assert [tick.creates_cap for tick in caught_up] == [2, 3, 4]  # back up by an eighth a tick


def test_poll_lag_counts_only_polls_handed_out_and_not_done(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(runner_env, monkeypatch)  # the embedded database, SQLite
    assert settings.embedded and leases.poll_lag(settings) == 0.0
    late, due, ended = (create_job(settings, f"Job {n}", AGENT).id for n in range(3))
    _handed_out(settings, late, due_seconds_ago=4)
    _handed_out(settings, ended, due_seconds_ago=9)
    assert store.transition(settings, ended, [JobStatus.RUNNING], status=JobStatus.COMPLETED)
    assert store.transition(
        settings,
        due,
        [JobStatus.QUEUED],
        status=JobStatus.RUNNING,
        lease_until=None,
        next_poll_at=utcnow() - timedelta(seconds=7),
    )  # fmt: skip  (due, not handed out)
    assert leases.poll_lag(settings) == pytest.approx(4, abs=1)


def _mark_three_running_after_one_was_given_up(settings: Settings) -> None:
    ids = [create_job(settings, f"Taken {n}", AGENT).id for n in range(3)]
    taken = leases.take_many_for_create(settings, ids, utcnow() + timedelta(seconds=60))
    assert sorted(job.id for job in taken) == sorted(ids)
    given_up = ids[1]  # the reaper gave up on it while its create ran
    assert store.transition(settings, given_up, [JobStatus.SUBMITTING], status=JobStatus.NEEDS_ATTENTION)
    now = utcnow()
    values = {job_id: {"status": JobStatus.RUNNING, "interaction_id": f"v1_{n}", "next_poll_at": now,
                       "lease_until": None} for n, job_id in enumerate(ids)}  # fmt: skip
    turns = [JobTurn(job_id=job_id, kind="research", interaction_id=f"v1_{n}") for n, job_id in enumerate(ids)]

    assert leases.mark_running(settings, values, turns) == {ids[0], ids[2]}

    rows = {job.id: job for job in store.load_many(settings, ids)}
    assert [(rows[i].status, rows[i].interaction_id) for i in ids] == [
        (JobStatus.RUNNING, "v1_0"), (JobStatus.NEEDS_ATTENTION, None), (JobStatus.RUNNING, "v1_2")
    ]  # fmt: skip
    turns_stored = [turn.interaction_id for i in ids for turn in store.turns_of(settings, i)]
    assert turns_stored == ["v1_0", "v1_1", "v1_2"]  # the given-up job's turn too: that interaction exists


def test_recording_creates_moves_only_the_jobs_still_submitting(settings: Settings) -> None:
    _mark_three_running_after_one_was_given_up(settings)


def test_recording_creates_moves_only_the_jobs_still_submitting_on_sqlite(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _mark_three_running_after_one_was_given_up(settings_from(runner_env, monkeypatch))


def test_an_unwritable_reports_folder_costs_neither_the_report_nor_the_batch(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(env, monkeypatch)
    gateway = Gateway(settings)
    ends = _running(settings, gateway, "Ends now [[emulator duration=0]]")
    runs = _running(settings, gateway, "Runs on [[emulator duration=600]]")
    shutil.rmtree(settings.reports_dir)
    settings.reports_dir.write_text("")  # reports cannot be written now

    lifecycle.poll_many(settings, gateway, [ends, runs])

    stored = {job.id: job for job in store.load_many(settings, [ends, runs])}
    assert stored[runs].poll_count == 1 and stored[runs].remote_status in REMOTE_RUNNING  # rescheduled
    done = stored[ends]
    assert done.status == JobStatus.COMPLETED and done.next_poll_at is None  # no more polls: it is paid for
    assert done.report_markdown and done.report_path is None
    assert done.report_error is not None and done.report_error.startswith("report not written: ")

    assert outcome.write_pending_reports(settings) == 0  # still unwritable: it waits
    settings.reports_dir.unlink()
    assert outcome.write_pending_reports(settings) == 1
    written = store.load(settings, ends)
    assert written is not None and written.report_error is None and written.report_path
    assert Path(written.report_path).read_text() == written.report_markdown


def test_a_stale_batch_does_not_overwrite_a_newer_poll(settings: Settings) -> None:
    gateway = Gateway(settings)
    job_id = _running(settings, gateway, "Runs on [[emulator duration=600]]")
    later = utcnow() + timedelta(hours=1)

    def overtaken(step: Any, jobs_loaded: Any) -> Any:
        # Another poll of the same job finishes while this batch is under way (its lease had lapsed).
        assert store.transition(settings, job_id, [JobStatus.RUNNING], poll_count=5, next_poll_at=later)
        return map(step, jobs_loaded)

    polled = lifecycle.poll_many(settings, gateway, [job_id], overtaken)

    result = polled[job_id]
    assert result is not None and result.remote_status in REMOTE_RUNNING
    job = store.find(settings, job_id)
    assert (job.poll_count, job.next_poll_at) == (5, later)


def test_a_worker_process_freezes_what_it_loaded_once_its_client_is_made(settings: Settings) -> None:
    # Full garbage collections walked every module, class and client again: 12% of a step's CPU (issue 16).
    gc.unfreeze()
    try:
        state = worker._PerProcess(settings)
        assert gc.get_freeze_count() == 0
        gateway = state.gateway()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the SDK's and SQLAlchemy's classes and modules, at least
        assert state.gateway() is gateway and gc.get_freeze_count() == frozen  # once per process
    finally:
        gc.unfreeze()
