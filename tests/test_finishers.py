"""Two finishers of one job (a duplicated message, a lease taken over): the outcome, its files and the parent's
follow-up links are stored once, and the file on disk is always the stored report.

Real PostgreSQL and the embedded SQLite database, the emulator through the SDK, threads racing in one process.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from research_runner import lifecycle, outcome, store
from research_runner.gateway import Gateway
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.snapshot import Snapshot
from research_runner.status import JobStatus

from conftest import create_job, settings_from, wait_for

RACERS = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    extra = request.getfixturevalue("postgres_settings_env") if request.param == "postgresql" else {}
    return settings_from({**runner_env, **extra}, monkeypatch)


def ended_remotely(settings: Settings, gateway: Gateway, job: Job) -> tuple[Job, Snapshot]:
    """The job as a poller read it (still running) and the interaction's final snapshot."""
    lifecycle.start(settings, gateway, job.id)
    running = store.load(settings, job.id)
    assert running is not None and running.status == JobStatus.RUNNING and running.interaction_id
    interaction_id = running.interaction_id
    snapshot = wait_for(lambda: _ended(gateway, interaction_id), 30, "the interaction to complete")
    return running, snapshot


def _ended(gateway: Gateway, interaction_id: str) -> Snapshot | None:
    snapshot = gateway.get(interaction_id)
    return snapshot if snapshot.status == "completed" else None


def race(finishers: list[Callable[[], None]]) -> None:
    start = threading.Barrier(len(finishers))
    failures: list[BaseException] = []

    def run(finish: Callable[[], None]) -> None:
        start.wait()
        try:
            finish()
        except BaseException as exc:  # reported below, on the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(finish,)) for finish in finishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures


def assert_file_is_the_row(settings: Settings, job_id: str) -> Job:
    stored = store.load(settings, job_id)
    assert stored is not None and stored.status == JobStatus.COMPLETED and stored.report_path
    assert Path(stored.report_path).read_text() == stored.report_markdown
    assert not list(Path(settings.reports_dir).rglob(".tmp-*")), "no half-written file is left behind"
    return stored


def test_a_late_finisher_leaves_the_stored_report_and_its_file_untouched(settings: Settings, emulator: Any) -> None:
    gateway = Gateway(settings)
    seen, snapshot = ended_remotely(settings, gateway, create_job(settings, "Tides [[emulator duration=0 charts=1]]"))
    outcome.finish(settings, seen, snapshot)
    stored = assert_file_is_the_row(settings, seen.id)
    before = os.stat(str(stored.report_path))

    outcome.finish(settings, seen, snapshot)  # the same poll result, delivered again

    after = os.stat(str(stored.report_path))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "the file was rewritten"
    again = assert_file_is_the_row(settings, seen.id)
    assert (again.finished_at, again.report_markdown) == (stored.finished_at, stored.report_markdown)
    assert len(store.figures_of(settings, seen.id)) == 1


def test_finishers_racing_store_one_outcome_and_its_file(settings: Settings, emulator: Any) -> None:
    gateway = Gateway(settings)
    seen, snapshot = ended_remotely(settings, gateway, create_job(settings, "Grids [[emulator duration=0 charts=2]]"))

    race([lambda: outcome.finish(settings, seen, snapshot)] * RACERS)

    stored = assert_file_is_the_row(settings, seen.id)
    assert [f.number for f in store.figures_of(settings, seen.id)] == [1, 2]
    assert stored.poll_count == seen.poll_count + 1


def test_follow_ups_ending_together_are_each_linked_from_their_parent(settings: Settings, emulator: Any) -> None:
    gateway = Gateway(settings)
    seen, snapshot = ended_remotely(settings, gateway, create_job(settings, "Dams [[emulator duration=0]]"))
    outcome.finish(settings, seen, snapshot)
    children = [lifecycle.ask(settings, seen.id, f"Follow-up {i}: which river?") for i in range(RACERS)]
    ended = [ended_remotely(settings, gateway, child) for child in children]

    race([functools.partial(outcome.finish, settings, job, snap) for job, snap in ended])

    parent = assert_file_is_the_row(settings, seen.id)
    links = [line for line in str(parent.report_markdown).splitlines() if line.startswith("- [Follow-up ")]
    assert sorted(link.split(":")[0] for link in links) == [f"- [Follow-up {i}" for i in range(RACERS)]
    for child in children:
        assert_file_is_the_row(settings, child.id)
