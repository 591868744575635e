"""The webhook receiver: verify a delivery, record it once, and make its job's poll due at once.

A delivery only says "look at this interaction now": the payload is used to find the job (the job id the runner
put in `user_metadata`, else the interaction id), and the dispatcher's next tick sends the poll whose GET brings
the report. Deliveries come at least once and in any order, so each `webhook-id` is recorded once in the
database (shared by every receiver behind a load balancer) in the same transaction that makes the poll due;
duplicates, unknown interactions and jobs that already ended are acknowledged and ignored.

Signing secrets of static webhooks live in the `webhook_secrets` table, not in a file: every receiver (one per
container or host) reads the same ones, and a rotation reaches them all without a restart. They are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from research_runner import db, store
from research_runner.constants import JOB_LABEL
from research_runner.models import Job, WebhookDelivery, WebhookSecret
from research_runner.settings import Settings
from research_runner.status import JobStatus, utcnow

if TYPE_CHECKING:  # pyjwt, cryptography and starlette load only in the receiver, not with every command
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from research_runner.webhook_verify import Jwks, Verified

log = logging.getLogger("research_runner.webhooks")
# The events a runner's webhook subscribes to (SDK 3.6.1 WebhookSubscribedEvent; `cancelled` is only in the JS
# SDK's type, and the Python SDK passes unknown values through).
EVENTS = ("interaction.completed", "interaction.failed", "interaction.requires_action", "interaction.cancelled")
# Registration asks only for the events the Python SDK and the API reference list, which the API surely accepts.
REGISTER_EVENTS = EVENTS[:3]
PING_EVENT = "webhook.ping"
SECRETS_TTL = 5.0  # seconds the receiver trusts its copy of the secrets; a failed check reloads sooner
SECRETS_MIN_RELOAD = 0.5
RETRY_LATER_SECONDS = 1


class Busy(Exception):
    """The job has a step in flight: the delivery is refused (503) so the sender retries it."""


@dataclass(frozen=True)
class Target:
    event_type: str | None
    interaction_id: str | None
    job_id: str | None


def target_of(payload: dict[str, Any]) -> Target:
    """What a payload points at. Its shape is undocumented, so both a Standard Webhooks envelope
    (`type` + `data`) and the fields at the top level are accepted."""
    data = payload.get("data") if isinstance(payload.get("data"), dict) else payload
    assert isinstance(data, dict)
    metadata = data.get("user_metadata") or payload.get("user_metadata") or {}
    job_id = metadata.get(JOB_LABEL) if isinstance(metadata, dict) else None
    interaction_id = data.get("interaction_id") or data.get("id")
    event = payload.get("type") or payload.get("event_type")
    return Target(
        event_type=str(event)[:64] if event else None,
        interaction_id=str(interaction_id)[:255] if interaction_id else None,
        job_id=str(job_id)[:32] if job_id else None,
    )


def record(settings: Settings, delivery: Verified, now: datetime | None = None) -> str:
    """Record a verified delivery once and make its job due; returns the outcome. Raises Busy (nothing kept)."""
    now = now or utcnow()
    target = target_of(delivery.payload)
    with db.session(settings) as session:
        job = _job_of(session, target)
        outcome = _outcome(job, target)
        row = {
            "webhook_id": delivery.webhook_id,
            "received_at": now,
            "event_type": target.event_type,
            "interaction_id": target.interaction_id,
            "job_id": job.id if job else None,
            "outcome": outcome,
        }
        if not _insert_once(session, row):
            return "duplicate"
        if outcome == "due" and job is not None and not store.make_due(settings, job.id, now, session=session):
            raise Busy(job.id)  # leaving the block by an exception rolls the insert back
    return outcome


@dataclass(frozen=True)
class JobRef:
    """The few columns a delivery needs: loading whole rows (reports included) would halve the receiver's rate."""

    id: str
    status: str
    interaction_id: str | None


def _job_of(session: Session, target: Target) -> JobRef | None:
    columns = select(col(Job.id), col(Job.status), col(Job.interaction_id))
    for column, value in ((Job.id, target.job_id), (Job.interaction_id, target.interaction_id)):
        if value:
            row = session.execute(columns.where(col(column) == value).limit(1)).first()
            if row is not None:
                return JobRef(row[0], row[1], row[2])
    return None


def _outcome(job: JobRef | None, target: Target) -> str:
    if target.event_type == PING_EVENT:
        return "ping"
    if job is None:
        return "unknown"
    if job.status == JobStatus.SUBMITTING:
        raise Busy(job.id)  # the create has not returned yet; the retry finds the interaction recorded
    if job.status != JobStatus.RUNNING:
        return "ended"
    if target.interaction_id and job.interaction_id and target.interaction_id != job.interaction_id:
        return "stale"  # an earlier turn of the job's thread
    return "due"


def _insert_once(session: Session, row: dict[str, Any]) -> bool:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(WebhookDelivery).values(**row).on_conflict_do_nothing(index_elements=["webhook_id"])
    return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]


# ---- secrets ---------------------------------------------------------------------------------------------------
def save_secret(settings: Settings, webhook_name: str, uri: str, secret: str) -> None:
    with db.session(settings) as session:
        session.add(WebhookSecret(webhook_name=webhook_name, uri=uri, secret=secret))


def rotate_secret(settings: Settings, webhook_name: str, secret: str, keep_old_for: timedelta) -> None:
    """Store the new secret; the old ones keep verifying for `keep_old_for` (the API signs with both meanwhile)."""
    now = utcnow()
    with db.session(settings) as session:
        olds = list(session.scalars(select(WebhookSecret).where(col(WebhookSecret.webhook_name) == webhook_name)))
        for old in olds:
            if old.expires_at is None or old.expires_at > now + keep_old_for:
                old.expires_at = now + keep_old_for
        session.add(WebhookSecret(webhook_name=webhook_name, uri=olds[0].uri if olds else "", secret=secret))


def forget_secrets(settings: Settings, webhook_name: str) -> int:
    with db.session(settings) as session:
        result = session.execute(delete(WebhookSecret).where(col(WebhookSecret.webhook_name) == webhook_name))
        return int(result.rowcount)  # type: ignore[attr-defined]


def stored_webhooks(settings: Settings) -> dict[str, str]:
    """Webhook id -> URI of every static webhook whose secret is stored here."""
    with db.session(settings) as session:
        rows = session.execute(select(col(WebhookSecret.webhook_name), col(WebhookSecret.uri)))
        return {name: uri for name, uri in rows}


def live_secrets(settings: Settings) -> list[str]:
    now = utcnow()
    query = select(col(WebhookSecret.secret)).where(
        (col(WebhookSecret.expires_at).is_(None)) | (col(WebhookSecret.expires_at) > now)
    )
    with db.session(settings) as session:
        return list(session.scalars(query))


class Secrets:
    """The receiver's copy of the live secrets, reloaded every few seconds and after a failed check."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._values: list[str] = []
        self._loaded_at = float("-inf")

    def current(self, force: bool = False) -> list[str]:
        age = time.monotonic() - self._loaded_at
        if age > SECRETS_TTL or (force and age > SECRETS_MIN_RELOAD):
            self._values, self._loaded_at = live_secrets(self.settings), time.monotonic()
        return self._values


# ---- the ASGI app ---------------------------------------------------------------------------------------------
class Receiver:
    def __init__(self, settings: Settings) -> None:
        from research_runner.webhook_verify import Jwks

        self.settings = settings
        self.secrets = Secrets(settings)
        self.jwks: Jwks | None = Jwks(settings.webhook_jwks_url) if settings.webhook_jwks_url else None

    def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """(HTTP status, outcome) for one delivery; runs in a worker thread (database and JWKS calls block)."""
        from research_runner.webhook_verify import Rejected

        try:
            delivery = self._verify(body, headers)
            return 200, record(self.settings, delivery)
        except Rejected as exc:
            log.warning("webhook delivery rejected (%d): %s; webhook-id %r, %d bytes",
                        exc.status, exc, headers.get("webhook-id", "")[:80], len(body))  # fmt: skip
            return exc.status, "rejected"
        except Busy as exc:
            log.info("webhook delivery for job %s deferred: a step of it is in flight", str(exc)[:8])
            return 503, "busy"

    def _verify(self, body: bytes, headers: dict[str, str]) -> Verified:
        from research_runner.webhook_verify import Rejected, verify

        tolerance = self.settings.webhook_tolerance
        try:
            return verify(body, headers, self.secrets.current(), self.jwks, tolerance)
        except Rejected:
            fresh = self.secrets.current(force=True)  # a secret registered or rotated a moment ago
            return verify(body, headers, fresh, self.jwks, tolerance)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings) -> Starlette:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    receiver = Receiver(settings)

    async def deliver(request: Request) -> Response:
        body = await _read_limited(request, settings.webhook_max_body)
        if body is None:
            log.warning("webhook delivery rejected (413): body over %d bytes", settings.webhook_max_body)
            return JSONResponse({"error": "body too large"}, status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, outcome = await run_in_threadpool(receiver.handle, body, headers)
        extra = {"Retry-After": str(RETRY_LATER_SECONDS)} if status == 503 else None
        return JSONResponse({"outcome": outcome}, status_code=status, headers=extra)

    async def health(request: Request) -> Response:
        secrets = await run_in_threadpool(receiver.secrets.current)
        return JSONResponse({"ok": True, "secrets": len(secrets), "jwks": receiver.jwks is not None})

    routes = [
        Route("/", deliver, methods=["POST"]),
        Route("/webhooks", deliver, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.receiver = receiver
    return app


def serve(settings: Settings, host: str, port: int, announce: Callable[[str], None] = print) -> None:
    """Serve until SIGINT/SIGTERM; `announce` gets the listening URL (port 0 picks a free port)."""
    import socket

    import uvicorn

    db.ensure_schema(settings)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    bound_host, bound_port = sock.getsockname()[:2]
    announce(f"Webhook receiver listening on http://{bound_host}:{bound_port}/webhooks")
    # No access log: it would add nothing the rejection lines do not say, and cost throughput.
    config = uvicorn.Config(create_app(settings), access_log=False, log_level="info", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
