"""A webhook receiver served by uvicorn on 127.0.0.1 (port 0) in a thread, and signing helpers for senders."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from standardwebhooks import Webhook

from research_emulator.server import bind_socket, socket_url
from research_runner import store, webhooks
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.status import JobStatus, utcnow

from emulator_support import poll_until

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"  # base64 of a test-only key


class RunningReceiver:
    def __init__(self, settings: Settings) -> None:
        self._sock = bind_socket("127.0.0.1", 0)
        self.url = socket_url(self._sock) + "/webhooks"
        self.app = webhooks.create_app(settings)
        config = uvicorn.Config(self.app, lifespan="off", access_log=False, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        poll_until(lambda: self._server.started, timeout=10, interval=0.01, message="the receiver to start")

    @property
    def receiver(self) -> webhooks.Receiver:
        value: webhooks.Receiver = self.app.state.receiver
        return value

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def signed_headers(body: bytes, webhook_id: str, secret: str = SECRET, age: float = 0.0) -> dict[str, str]:
    when = datetime.now(UTC) - timedelta(seconds=age)
    signature = Webhook(secret).sign(webhook_id, when, body.decode())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": signature}


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def event(interaction_id: str, job_id: str | None = None, kind: str = "interaction.completed") -> bytes:
    data: dict[str, Any] = {"id": interaction_id, "status": "completed"}
    if job_id:
        data["user_metadata"] = {"research_runner_job": job_id}
    return json.dumps({"type": kind, "timestamp": utcnow().isoformat(), "data": data}).encode()


def running_job(settings: Settings, interaction_id: str, leased: bool = False) -> Job:
    """A job whose interaction runs and whose next poll is an hour away (the safety net's distance)."""
    job = store.new_job(settings, "a question", "deep-research-preview-04-2026", held=False)
    later = utcnow() + timedelta(hours=1)
    job.status, job.interaction_id, job.next_poll_at = JobStatus.RUNNING, interaction_id, later
    job.submitted_at = utcnow()
    job.lease_until = later if leased else None
    return store.add(settings, job)
