"""Webhooks end to end on real processes: emulator, `research worker`, `research webhooks serve`, SQLite.

Polling is set to an hour-long safety net, so a job stored within the test's deadline was stored because a
delivery made its poll due; with deliveries dropped, a short safety net still stores every job. The emulator's
delivery faults (docs/emulator.md, "Webhooks") stand for what the API's docs promise: at least once, retried with
backoff for up to 24 h, in no particular order (../shared/reference/interactions-api.md, "Webhooks").
"""

from __future__ import annotations

import itertools
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from server_support import free_port
from sqlmodel import select

from research_runner import db
from research_runner.client import Client
from research_runner.models import Job, WebhookDelivery
from research_runner.settings import Settings
from research_runner.status import JobStatus

from conftest import settings_from, wait_for
from emulator_support import AGENT

RETRY_AFTER_REJECTION = 1.5  # seconds: the emulator's first retry, so a report stored later came after it
QUESTION = "How do tidal power stations store energy? [[emulator outcome=completed duration={d}]]"


class ReceiverProcess:
    def __init__(self, env: dict[str, str], log: Path, port: int = 0) -> None:
        self._log = log.open("wb")
        command = [sys.executable, "-m", "research_runner", "webhooks", "serve", "--port", str(port)]
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

    def start(env: dict[str, str], port: int = 0) -> ReceiverProcess:
        started.append(ReceiverProcess(env, tmp_path / f"receiver-{len(started)}.log", port))
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


def submit(settings: Any, count: int, first: int = 0) -> list[str]:
    client = Client(settings)
    return [client.submit(QUESTION.format(d=0.5 + i * 0.2)).job.id for i in range(first, first + count)]


def stored(settings: Any, job_ids: list[str]) -> list[Job] | None:
    with db.session(settings) as session:
        jobs = list(session.scalars(select(Job).where(Job.id.in_(job_ids))))  # type: ignore[attr-defined]
    return jobs if all(j.status == JobStatus.COMPLETED and j.report_path for j in jobs) else None


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


# ---- the emulator's other delivery faults ------------------------------------------------------------------
def start_pipeline(
    runner_env: dict[str, str],
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    start_worker: Any,
    start_receiver: Any,
    receiver_up: bool = True,
) -> tuple[Settings, str, Callable[[], ReceiverProcess]]:
    """Worker and receiver (on a port chosen beforehand, so both start at once); returns the way to start it later."""
    env = webhook_env(runner_env, emulator, safety_net=3600)
    port = free_port()
    env["RESEARCH_WEBHOOK_URL"] = f"http://127.0.0.1:{port}/webhooks"
    settings = settings_from(env, monkeypatch)
    start_worker(env, "--concurrency", "1")  # one pool process pays the SDK's first import once, not twice at once

    def receive() -> ReceiverProcess:
        started: ReceiverProcess = start_receiver(env, port)
        return started

    if receiver_up:
        receive()
    return settings, env["RESEARCH_WEBHOOK_URL"], receive


def set_delivery_faults(emulator: Any, **faults: float) -> None:
    emulator._admin("PUT", "/_emulator/webhook-faults", faults)


def deliveries(emulator: Any) -> dict[str, Any]:
    result: dict[str, Any] = emulator._admin("GET", "/_emulator/webhook-deliveries")
    return result


def attempts_of(emulator: Any, interaction_id: str | None) -> list[dict[str, Any]]:
    """The emulator's attempts at delivering this interaction's end, oldest first."""
    return [a for a in deliveries(emulator)["recent"] if a["interaction_id"] == interaction_id]


def rows_by_job(settings: Settings) -> dict[str | None, list[WebhookDelivery]]:
    found: dict[str | None, list[WebhookDelivery]] = {}
    with db.session(settings) as session:
        for row in session.scalars(select(WebhookDelivery)):
            found.setdefault(row.job_id, []).append(row)
    return found


def assert_stored_once(jobs: list[Job], settings: Settings, emulator: Any) -> None:
    """One report file per job, equal to its row; one create per job; at most 2 GETs per job."""
    creates = emulator.stats()["creates_by_input"]
    for job in jobs:
        files = sorted(settings.reports_dir.glob(f"*-{job.short_id}.md"))
        assert [str(f) for f in files] == [job.report_path]
        assert files[0].read_text() == job.report_markdown
        assert creates[job.question] == 1
        assert job.poll_count <= 2


def assert_stored_after_accepted_delivery(jobs: list[Job], settings: Settings, emulator: Any) -> None:
    """Each job's one `due` row came from the emulator's 2xx attempt, and the report came after it."""
    rows = rows_by_job(settings)
    for job in jobs:
        accepted = [a for a in attempts_of(emulator, job.interaction_id) if a["status"] == 200]
        assert [r.outcome for r in rows[job.id]] == ["due"]
        assert rows[job.id][0].webhook_id == accepted[0]["webhook_id"]
        assert job.finished_at is not None and job.finished_at.timestamp() >= accepted[0]["sent_at"]


def test_duplicated_delayed_and_reordered_deliveries_store_each_job_once(
    runner_env: dict[str, str], emulator: Any, monkeypatch: pytest.MonkeyPatch, start_worker: Any, start_receiver: Any
) -> None:
    # Every delivery is held 1 s, plus up to 1 s more drawn per delivery (so they cross), and sent twice. Also the
    # plain path: each job stored after its webhook with exactly one GET, the one the delivery asked for.
    set_delivery_faults(emulator, duplicate=1.0, delay=1.0, reorder=1.0, delay_seconds=1.0)
    settings, url, _ = start_pipeline(runner_env, emulator, monkeypatch, start_worker, start_receiver)
    job_ids = submit(settings, 4)
    stranger = emulator.client().interactions.create(  # an interaction no job of ours knows
        agent=AGENT, input="not ours", background=True, webhook_config={"uris": [url]}
    )
    jobs = wait_for(lambda: stored(settings, job_ids), 60, "the jobs stored after their delayed deliveries")
    wait_for(lambda: None in rows_by_job(settings), 30, "the stranger's delivery acknowledged")
    wait_for(lambda: deliveries(emulator)["counts"].get("status_200") == 2 * 5, 30, "every copy acknowledged")
    assert_stored_once(jobs, settings, emulator)
    assert_stored_after_accepted_delivery(jobs, settings, emulator)  # so not before the 1 s delay
    counts = deliveries(emulator)["counts"]
    assert counts["duplicated"] == 5 and set(counts) & {"retries", "status_401", "status_503"} == set()
    [unknown] = rows_by_job(settings)[None]
    assert (unknown.outcome, unknown.interaction_id) == ("unknown", stranger.id)
    assert sum(int(n) for n in emulator.stats()["requests"]["get"].values()) == len(job_ids)


def test_bad_signatures_and_stale_timestamps_are_rejected_and_never_act(
    runner_env: dict[str, str], emulator: Any, monkeypatch: pytest.MonkeyPatch, start_worker: Any, start_receiver: Any
) -> None:
    # A spoiled first attempt is refused (401); the emulator's retry 1.5 s later is signed properly.
    set_delivery_faults(emulator, bad_signature=1.0, retry_initial=RETRY_AFTER_REJECTION)
    settings, _, _ = start_pipeline(runner_env, emulator, monkeypatch, start_worker, start_receiver)
    forged = submit(settings, 2)
    wait_for(lambda: deliveries(emulator)["counts"].get("status_401") == 2, 30, "the forged deliveries refused")
    set_delivery_faults(emulator, stale_timestamp=1.0)  # the retries above are already scheduled
    stale = submit(settings, 2, first=2)
    jobs = wait_for(lambda: stored(settings, forged + stale), 60, "the jobs stored after the good retries")
    assert_stored_once(jobs, settings, emulator)
    assert_stored_after_accepted_delivery(jobs, settings, emulator)
    for job in jobs:
        tries = attempts_of(emulator, job.interaction_id)
        assert [a["status"] for a in tries] == [401, 200]
        first, second = tries
        assert first["webhook_id"] == second["webhook_id"]
        assert first["spoil"] == ("bad_signature" if job.id in forged else "stale_timestamp")
        assert job.finished_at is not None and job.finished_at.timestamp() >= first["sent_at"] + RETRY_AFTER_REJECTION


def test_a_receiver_down_then_up_gets_the_retries_and_stores_every_job(
    runner_env: dict[str, str], emulator: Any, monkeypatch: pytest.MonkeyPatch, start_worker: Any, start_receiver: Any
) -> None:
    set_delivery_faults(emulator, retry_initial=0.5)
    settings, _, receive = start_pipeline(runner_env, emulator, monkeypatch, start_worker, start_receiver, False)
    job_ids = submit(settings, 2)
    refused = 3 * len(job_ids)  # three attempts each found nobody listening
    wait_for(lambda: deliveries(emulator)["counts"].get("status_0", 0) >= refused, 30, "deliveries refused")
    up_at = time.time()
    receive()
    jobs = wait_for(lambda: stored(settings, job_ids), 60, "the jobs stored after the receiver came back")
    assert_stored_once(jobs, settings, emulator)
    assert_stored_after_accepted_delivery(jobs, settings, emulator)
    for job in jobs:
        tries = attempts_of(emulator, job.interaction_id)
        assert [a["status"] for a in tries] == [0] * (len(tries) - 1) + [200] and len(tries) >= 4
        gaps = [b["sent_at"] - a["sent_at"] for a, b in itertools.pairwise(tries)]
        assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps  # backing off
        assert gaps[-1] > 3 * gaps[0], gaps  # doubling: 0.5, 1, 2 s ... (loose: the emulator's 50 ms ticks)
        assert job.finished_at is not None and job.finished_at.timestamp() > up_at
