"""Shared fixtures: real PostgreSQL, real Redis, real worker processes, and the emulator (emulator_support)."""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from research_runner import db, store
from research_runner.constants import DEFAULT_AGENT
from research_runner.models import Job
from research_runner.settings import Settings, load_settings

from emulator_support import *  # noqa: F403
from emulator_support import poll_until

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
# pytest-xdist runs the tests in two processes (pyproject's addopts); each uses its own Redis database, counted
# from TEST_REDIS_URL's (gw0 that one, gw1 the next).
_BASE_REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
_XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_URL = f"{_BASE_REDIS.rsplit('/', 1)[0]}/{int(_BASE_REDIS.rsplit('/', 1)[1]) + _XDIST_INDEX}"
# Chaos tests restart the machine's Redis and PostgreSQL: each holds this lock alone, every other test shares it.
SERVICES_LOCK = Path(os.environ.get("TEST_SERVICES_LOCK", Path(tempfile.gettempdir()) / "research-tests.lock"))
TEST_API_KEY = "test-key-not-secret"
# Fast polling so emulated jobs of a second or two finish promptly.
FAST_POLICY = {
    "RESEARCH_POLL_INITIAL": "0.3",
    "RESEARCH_POLL_MAX": "1.0",
    "RESEARCH_DISPATCH_INTERVAL": "0.25",
    "RESEARCH_LEASE_SECONDS": "15",
}


UNIT_TESTS = Path(__file__).parent / "unit"
CHAOS_TESTS = Path(__file__).parent / "test_chaos.py"
# A test uses the machine's Redis or PostgreSQL (which the chaos tests restart) through these fixtures, or its
# module uses these (the services' addresses, or fixtures asked for by name at run time).
SERVICE_FIXTURES = frozenset({"redis_url", "postgres_url", "postgres_settings_env"})
SERVICE_NAMES = ("REDIS_URL", "PG_ADMIN_URL", "getfixturevalue(")


@pytest.fixture(autouse=True)
def services_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """With the tests on two processes, a chaos test runs while no test that uses Redis or PostgreSQL does; the
    others (the emulator, the embedded SQLite stack, unit tests) go on beside it."""
    if request.node.get_closest_marker("chaos") is not None:
        mode = fcntl.LOCK_EX
    elif request.node.get_closest_marker("services") is not None:
        mode = fcntl.LOCK_SH
    else:
        yield
        return
    with SERVICES_LOCK.open("a") as lock:
        fcntl.flock(lock, mode)
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs services: `pytest tests/unit` or `-m "not integration"` runs the rest in seconds."""
    for item in items:
        if not item.path.is_relative_to(UNIT_TESTS):
            item.add_marker(pytest.mark.integration)
        if item.path == CHAOS_TESTS:
            item.add_marker(pytest.mark.chaos)
        elif SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) or _names_services(item.path):
            item.add_marker(pytest.mark.services)


@functools.cache
def _names_services(path: Path) -> bool:
    source = path.read_text()
    return any(name in source for name in SERVICE_NAMES)


def wait_for(condition: Callable[[], Any], timeout: float, message: str, interval: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy or the deadline passes."""
    return poll_until(condition, timeout=timeout, interval=interval, message=message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server, dropped at the end."""
    name = f"rr_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_settings_env(postgres_url: str) -> Iterator[dict[str, str]]:
    settings = load_settings(database_url=postgres_url)
    db.upgrade(settings)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("TRUNCATE jobs, batches, schedules, job_turns, job_files, figures")
    yield {"RESEARCH_DATABASE_URL": postgres_url}


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    return REDIS_URL


@pytest.fixture
def runner_env(tmp_path: Path, emulator: Any) -> dict[str, str]:
    """Environment for the runner pointing at the test emulator, embedded storage in tmp_path."""
    return {
        "RESEARCH_DATA_DIR": str(tmp_path / "data"),
        "RESEARCH_REPORTS_DIR": str(tmp_path / "reports"),
        "RESEARCH_GEMINI_BASE_URL": emulator.url,
        "GEMINI_API_KEY": TEST_API_KEY,
        **FAST_POLICY,
    }


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in ("GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    db.ensure_schema(settings)
    return settings


class WorkerProcess:
    """`research worker` as a real child process."""

    def __init__(self, env: dict[str, str], log_path: Path, *extra: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "research_runner", "worker", "--loglevel", "INFO", *extra]
        self.process = subprocess.Popen(
            command, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the worker and its children at once. A warm shutdown takes ~5 s even idle, a test that needs one
        sends SIGTERM itself; what a test checks is in the database, which a killed step never half-writes."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], *extra: str) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log", *extra)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def create_job(settings: Settings, question: str, agent: str = DEFAULT_AGENT) -> Job:
    """A queued job, stored as `research submit` stores one (held for its first step, which tests send)."""
    return store.add(settings, store.new_job(settings, question, agent))
