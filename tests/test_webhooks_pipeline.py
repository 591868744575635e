"""Webhooks end to end on real processes: emulator, `research worker`, `research webhooks serve`, SQLite.

Polling is set to an hour-long safety net, so a job stored within the test's deadline was stored because a
delivery made its poll due; with deliveries dropped, a short safety net still stores every job.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from research_runner import db
from research_runner.client import Client
from research_runner.models import Job, WebhookDelivery
from research_runner.status import JobStatus

from conftest import settings_from, wait_for

QUESTION = "How do tidal power stations store energy? [[emulator outcome=completed duration={d}]]"


class ReceiverProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._log = log.open("wb")
        command = [sys.executable, "-m", "research_runner", "webhooks", "serve", "--port", "0"]
        self.process = subprocess.Popen(
            command, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=self._log
        )
        self.url = self._read_url()

    def _read_url(self) -> str:
        assert self.process.stdout is not None
        line = b""
        deadline = time.monotonic() + 20
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                assert time.monotonic() < deadline and self.process.poll() is None, "receiver did not start"
                if selector.select(0.5):
                    line += os.read(self.process.stdout.fileno(), 1)
        return line.decode().strip().rsplit(" ", 1)[-1]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def start_receiver(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ReceiverProcess]]:
    started: list[ReceiverProcess] = []

    def start(env: dict[str, str]) -> ReceiverProcess:
        started.append(ReceiverProcess(env, tmp_path / f"receiver-{len(started)}.log"))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


def webhook_env(runner_env: dict[str, str], emulator: Any, safety_net: float) -> dict[str, str]:
    return {
        **runner_env,
        "RESEARCH_WEBHOOK_POLL_INTERVAL": str(safety_net),
        "RESEARCH_WEBHOOK_JWKS_URL": emulator.url + "/_emulator/jwks.json",
    }


def submit(settings: Any, count: int) -> list[str]:
    client = Client(settings)
    return [client.submit(QUESTION.format(d=0.5 + i * 0.2)).job.id for i in range(count)]


def stored(settings: Any, job_ids: list[str]) -> list[Job] | None:
    with db.session(settings) as session:
        jobs = list(session.scalars(select(Job).where(Job.id.in_(job_ids))))  # type: ignore[attr-defined]
    return jobs if all(j.status == JobStatus.COMPLETED and j.report_path for j in jobs) else None


def test_a_research_is_stored_after_its_webhook_not_after_a_poll(
    runner_env: dict[str, str], emulator: Any, monkeypatch: pytest.MonkeyPatch, start_worker: Any, start_receiver: Any
) -> None:
    env = webhook_env(runner_env, emulator, safety_net=3600)
    settings_from(env, monkeypatch)
    receiver = start_receiver(env)
    env["RESEARCH_WEBHOOK_URL"] = receiver.url
    settings = settings_from(env, monkeypatch)
    worker = start_worker(env, "--concurrency", "2")
    job_ids = submit(settings, 3)
    jobs = wait_for(lambda: stored(settings, job_ids), 60, "the jobs stored after their webhooks")
    assert all(Path(j.report_path or "").exists() for j in jobs)
    assert max(j.poll_count for j in jobs) <= 1  # the one GET the webhook asked for; no timed polls
    gets = sum(int(n) for code, n in emulator.stats()["requests"]["get"].items() if code == "200")
    assert gets == len(job_ids)
    with db.session(settings) as session:
        outcomes = [d.outcome for d in session.scalars(select(WebhookDelivery))]
    assert outcomes == ["due"] * len(job_ids), worker.log()


def test_a_dropped_delivery_is_caught_by_the_safety_net(
    runner_env: dict[str, str], emulator: Any, monkeypatch: pytest.MonkeyPatch, start_worker: Any, start_receiver: Any
) -> None:
    emulator._admin("PUT", "/_emulator/webhook-faults", {"drop": 1.0})
    env = webhook_env(runner_env, emulator, safety_net=3)
    settings_from(env, monkeypatch)
    receiver = start_receiver(env)
    env["RESEARCH_WEBHOOK_URL"] = receiver.url
    settings = settings_from(env, monkeypatch)
    start_worker(env, "--concurrency", "2")
    job_ids = submit(settings, 2)
    wait_for(lambda: stored(settings, job_ids), 60, "the jobs stored by the safety-net poll")
    assert emulator._admin("GET", "/_emulator/webhook-deliveries")["counts"]["dropped"] == len(job_ids)
    with db.session(settings) as session:
        assert list(session.scalars(select(WebhookDelivery))) == []
