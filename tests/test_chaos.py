"""Crashes and outages on real processes: every job still ends in its true state, created once, stored once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from click.testing import CliRunner

from research_runner import store
from research_runner.cli import cli
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.status import ACTIVE_STATUSES, JobStatus

from conftest import settings_from, wait_for

POLL_MAX = 1.0
OUTAGE_SECONDS = 15.0
# Leases as short as two poll intervals, so "resumes within two maximum poll intervals" is what is tested.
CHAOS_POLICY = {
    "RESEARCH_POLL_MAX": str(POLL_MAX),
    "RESEARCH_LEASE_SECONDS": str(2 * POLL_MAX),
    "RESEARCH_REQUEST_TIMEOUT": "3",
}


@pytest.fixture
def env(runner_env: dict[str, str], postgres_settings_env: dict[str, str], redis_url: str) -> dict[str, str]:
    return {**runner_env, **postgres_settings_env, "RESEARCH_BROKER_URL": redis_url, **CHAOS_POLICY}


def submit(env: dict[str, str], count: int, duration: float, outcome: str = "completed") -> list[str]:
    ids = []
    for i in range(count):
        question = f"Chaos {i}: what keeps a grid stable? [[emulator outcome={outcome} duration={duration}]]"
        result = CliRunner().invoke(cli, ["submit", "--json", question], env=env)
        assert result.exit_code == 0, result.output
        ids.append(result.stdout.split('"id": "')[1].split('"')[0])
    return ids


def statuses(settings: Settings, ids: list[str]) -> list[Job]:
    return [store.find(settings, job_id) for job_id in ids]


def all_ended(settings: Settings, ids: list[str], timeout: float) -> list[Job]:
    def ended() -> list[Job] | None:
        found = statuses(settings, ids)
        return None if any(job.status in ACTIVE_STATUSES for job in found) else found

    return wait_for(ended, timeout, "every job to end", interval=0.2)  # type: ignore[no-any-return]


def assert_stored_once(found: list[Job], settings: Settings, emulator: Any) -> None:
    stats = emulator.stats()
    assert sorted(stats["creates_by_input"].values()) == [1] * len(found)
    for job in found:
        assert job.status == JobStatus.COMPLETED, (job.short_id, job.status, job.error)
        files = list(Path(settings.reports_dir).glob(f"*-{job.short_id}.md"))
        assert [str(f) for f in files] == [job.report_path]
        assert files[0].read_text() == job.report_markdown
    assert not list(Path(settings.reports_dir).glob(".tmp-*")), "no half-written report is left behind"


def kill_hard(worker: Any) -> None:
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


def test_worker_killed_while_polling_resumes_within_two_poll_intervals(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, start_worker: Any, emulator: Any
) -> None:
    settings = settings_from(env, monkeypatch)
    worker = start_worker(env, "--concurrency", "2")
    ids = submit(env, 8, duration=4)
    wait_for(
        lambda: all(j.status == JobStatus.RUNNING and j.poll_count >= 2 for j in statuses(settings, ids)),
        30,
        "every job to be polled twice",
    )
    kill_hard(worker)
    polls_at_kill = {job.id: job.poll_count for job in statuses(settings, ids)}
    restarted = start_worker(env, "--concurrency", "2")
    # Worker start-up is not the runner's doing; from "ready" on, polls must resume within 2 max intervals.
    wait_for(lambda: "ready." in restarted.log(), 30, "the new worker to be ready")
    wait_for(
        lambda: all(
            j.poll_count > polls_at_kill[j.id] or j.status not in ACTIVE_STATUSES for j in statuses(settings, ids)
        ),
        10 + 2 * POLL_MAX,
        "polls to resume",
    )
    assert_stored_once(all_ended(settings, ids, 60), settings, emulator)


def test_worker_killed_during_create_never_creates_twice(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, start_worker: Any, emulator: Any
) -> None:
    settings = settings_from(env, monkeypatch)
    emulator.set_faults({"create": {"slow": 1.0}, "slow_delay": 3})
    worker = start_worker(env, "--concurrency", "2")
    ids = submit(env, 2, duration=1)
    wait_for(lambda: all(j.status == JobStatus.SUBMITTING for j in statuses(settings, ids)), 30, "creates in flight")
    kill_hard(worker)
    emulator.set_faults({})
    start_worker(env, "--concurrency", "2")
    found = all_ended(settings, ids, 30)
    for job in found:
        assert job.status == JobStatus.NEEDS_ATTENTION and "may or may not exist" in str(job.error)
    # The killed creates may or may not have landed; nothing created a second one after the restart.
    stats = emulator.stats()
    assert stats["interactions_created"] <= len(ids) and all(n == 1 for n in stats["creates_by_input"].values())
    assert sum(stats["requests"]["create"].values()) <= len(ids)


REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


def test_redis_emptied_then_restarted_loses_no_job(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, start_worker: Any, emulator: Any, redis_url: str
) -> None:
    settings = settings_from(env, monkeypatch)
    worker = start_worker(env, "--concurrency", "2")
    ids = submit(env, 6, duration=5)
    wait_for(lambda: all(j.status == JobStatus.RUNNING for j in statuses(settings, ids)), 30, "jobs running")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # the test database only: other tests on this machine may share the server
    wait_for(lambda: all(j.poll_count >= 2 for j in statuses(settings, ids)), 20, "polls after the flush")
    client.shutdown(nosave=True)  # the broker goes away (and, keeping nothing on disk, comes back empty)
    client.close()
    os.makedirs("/var/lib/redis", exist_ok=True)
    os.makedirs("/var/log/redis", exist_ok=True)
    subprocess.run(REDIS_START, check=True, timeout=30)
    wait_for(lambda: _redis_up(redis_url), 30, "Redis back")
    assert_stored_once(all_ended(settings, ids, 60), settings, emulator)
    assert worker.process.poll() is None, worker.log()


def _redis_up(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.ConnectionError:
        return False


def test_postgres_restarted_under_the_worker(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, start_worker: Any, emulator: Any, postgres_url: str
) -> None:
    settings = settings_from(env, monkeypatch)
    worker = start_worker(env, "--concurrency", "2")
    ids = submit(env, 6, duration=4)
    wait_for(lambda: all(j.status == JobStatus.RUNNING for j in statuses(settings, ids)), 30, "jobs running")
    cluster = os.listdir("/etc/postgresql")[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_for(lambda: _pg_up(postgres_url), 30, "PostgreSQL back")
    assert_stored_once(all_ended(settings, ids, 60), settings, emulator)
    assert worker.process.poll() is None, worker.log()


def _pg_up(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def test_api_unreachable_for_a_while_delays_but_loses_nothing(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, start_worker: Any, emulator: Any
) -> None:
    # One short attempt per poll, and a lease longer than that, so hanging polls fail fast and are not re-sent.
    env = {**env, "RESEARCH_GET_ATTEMPTS": "1", "RESEARCH_REQUEST_TIMEOUT": "2", "RESEARCH_LEASE_SECONDS": "5"}
    settings = settings_from(env, monkeypatch)
    emulator.set_faults({"get": {"429": 0.1, "500": 0.05, "503": 0.05}, "create": {"429": 0.2}})
    start_worker(env, "--concurrency", "2")
    ids = submit(env, 6, duration=3)
    wait_for(lambda: all(j.status == JobStatus.RUNNING for j in statuses(settings, ids)), 30, "jobs running")
    polls_before = {job.id: job.poll_count for job in statuses(settings, ids)}
    stopped_at = time.monotonic()
    emulator.process.send_signal(signal.SIGSTOP)  # requests now hang until they time out

    def outlasted() -> bool:
        # Longer than three leases and fifteen poll intervals (as two minutes are in production), with every
        # job failing polls again and again and still running.
        return time.monotonic() - stopped_at > OUTAGE_SECONDS and all(
            job.status == JobStatus.RUNNING
            and "temporary API problem" in str(job.error)
            and job.poll_count >= polls_before[job.id] + 2
            for job in statuses(settings, ids)
        )

    try:
        wait_for(outlasted, OUTAGE_SECONDS + 30, "an outage in which every job keeps failing its polls")
    finally:
        emulator.process.send_signal(signal.SIGCONT)
    emulator.set_faults({})
    assert_stored_once(all_ended(settings, ids, 60), settings, emulator)
