"""The webhook receiver: verify a delivery, record it once, and make its job's poll due at once.

A delivery only says "look at this interaction now": the payload is used to find the job (the job id the runner
put in `user_metadata`, else the interaction id), and the dispatcher's next tick sends the poll whose GET brings
the report. Deliveries come at least once and in any order, so each `webhook-id` is recorded once in the
database (shared by every receiver behind a load balancer) in the same transaction that makes the poll due
(webhook_record.py, which shares one transaction among the deliveries that arrive together); duplicates, unknown
interactions and jobs that already ended are acknowledged and ignored.

Signing secrets of static webhooks live in the `webhook_secrets` table, not in a file: every receiver (one per
container or host) reads the same ones, and a rotation reaches them all without a restart. They are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlmodel import col

from research_runner import db
from research_runner.exceptions import ServiceUnavailable
from research_runner.models import WebhookSecret
from research_runner.settings import Settings
from research_runner.status import utcnow
from research_runner.webhook_record import BUSY, Delivery, GroupCommit, target_of
from research_runner.webhook_record import PING_EVENT as PING_EVENT  # the doctor's ping is found by it

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
SECRETS_TTL = 5.0  # seconds the receiver trusts its copy of the secrets; a failed check reloads sooner
SECRETS_MIN_RELOAD = 0.5
RETRY_LATER_SECONDS = 1


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

    def stale(self) -> bool:
        return time.monotonic() - self._loaded_at > SECRETS_TTL

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
        self.writer = GroupCommit(settings)

    async def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """(HTTP status, outcome) for one delivery, answered once it is recorded (or refused)."""
        from research_runner.webhook_verify import Rejected

        try:
            verified = await self._verify(body, headers)
            outcome = await self.writer.record(Delivery(verified.webhook_id, target_of(verified.payload)))
        except Rejected as exc:
            log.warning("webhook delivery rejected (%d): %s; webhook-id %r, %d bytes",
                        exc.status, exc, headers.get("webhook-id", "")[:80], len(body))  # fmt: skip
            return exc.status, "rejected"
        except ServiceUnavailable:
            return 503, "unavailable"  # the writer logged why; the sender retries
        if outcome == BUSY:
            log.info("webhook delivery %r deferred: a step of its job is in flight", verified.webhook_id[:80])
            return 503, BUSY
        return 200, outcome

    async def _verify(self, body: bytes, headers: dict[str, str]) -> Verified:
        from research_runner.webhook_verify import Rejected

        try:
            return await self._check(body, headers, force=False)
        except Rejected:
            return await self._check(body, headers, force=True)  # a secret registered or rotated a moment ago

    async def _check(self, body: bytes, headers: dict[str, str], force: bool) -> Verified:
        """A check costs tens of microseconds and runs in the event loop; only one that must reload the secrets
        (database) or fetch the keys (network) goes to a thread, as a hop costs more than the check."""
        from starlette.concurrency import run_in_threadpool

        if force or self._would_wait(headers.get("webhook-signature", "")):
            return await run_in_threadpool(self._check_now, body, headers, force)
        return self._check_now(body, headers, force)

    def _check_now(self, body: bytes, headers: dict[str, str], force: bool) -> Verified:
        from research_runner.webhook_verify import verify

        return verify(body, headers, self.secrets.current(force), self.jwks, self.settings.webhook_tolerance)

    def _would_wait(self, signature: str) -> bool:
        from research_runner.webhook_verify import is_jwt

        if is_jwt(signature):
            return self.jwks is not None and not self.jwks.cached(signature)
        return self.secrets.stale()


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
        status, outcome = await receiver.handle(body, headers)
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
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on connections of a socket that says TCP, and
    # without it every answer (headers, then body: two writes) waited ~40 ms for the sender's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    bound_host, bound_port = sock.getsockname()[:2]
    announce(f"Webhook receiver listening on http://{bound_host}:{bound_port}/webhooks")
    # No access log: it would add nothing the rejection lines do not say, and cost throughput.
    config = uvicorn.Config(create_app(settings), access_log=False, log_level="info", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
