"""`research doctor`'s webhook checks: the receiver answers, a way to verify is configured, a signed ping arrives.

Skipped entirely while webhooks are off (RESEARCH_WEBHOOK_URL unset) and no static webhook secret is stored.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

from sqlmodel import col, select

from research_runner import db, webhooks
from research_runner.doctor import FAIL, OK, Check
from research_runner.exceptions import GatewayError
from research_runner.models import WebhookDelivery
from research_runner.settings import Settings
from research_runner.status import utcnow

REACH_TIMEOUT = 5.0
PING_DEADLINE = 15.0
PING_POLL = 0.2


def webhook_checks(settings: Settings) -> Iterator[Check]:
    stored = webhooks.stored_webhooks(settings)
    if not settings.webhooks_on and not stored:
        return
    if settings.webhook_url:
        yield check_reachable(settings.webhook_url)
    yield check_verification(settings, stored)
    for webhook_id in stored:
        yield check_ping(settings, webhook_id)


def check_reachable(url: str) -> Check:
    """The receiver answers GET /health beside its delivery path with its own JSON."""
    health = url.rstrip("/").rsplit("/", 1)[0] + "/health" if url.rstrip("/").endswith("/webhooks") else url
    try:
        with urllib.request.urlopen(health, timeout=REACH_TIMEOUT) as response:
            ok = json.loads(response.read()).get("ok") is True
    except (OSError, ValueError) as exc:
        return Check("webhook receiver", FAIL, f"{health} does not answer ({exc})", "start `research webhooks serve`")
    if not ok:
        return Check("webhook receiver", FAIL, f"{health} is not a research-runner receiver", "check the URL")
    return Check("webhook receiver", OK, f"{health} answers")


def check_verification(settings: Settings, stored: dict[str, str]) -> Check:
    ways = [f"{len(stored)} static webhook secret(s)"] if stored else []
    ways += ["JWKS " + settings.webhook_jwks_url] if settings.webhook_jwks_url else []
    if ways:
        return Check("webhook secrets", OK, ", ".join(ways) + " configured (secrets not shown)")
    if settings.webhook_dynamic:
        fix = "set RESEARCH_WEBHOOK_JWKS_URL, or register a webhook and set RESEARCH_WEBHOOK_DYNAMIC=false"
        return Check(
            "webhook secrets", FAIL, "deliveries will be JWT-signed but RESEARCH_WEBHOOK_JWKS_URL is unset", fix
        )
    return Check("webhook secrets", FAIL, "no secret stored", "run `research webhooks register URL`")


def check_ping(settings: Settings, webhook_id: str) -> Check:
    """Ask the API to ping the webhook, then wait for the receiver to record that signed delivery."""
    from research_runner.gateway import Gateway

    since = utcnow() - timedelta(seconds=1)
    try:
        Gateway(settings).ping_webhook(webhook_id)
    except GatewayError as exc:
        return Check(f"webhook {webhook_id} ping", FAIL, f"the API refused the ping ({exc})", "check the webhook id")
    deadline = time.monotonic() + PING_DEADLINE
    while time.monotonic() < deadline:
        if _ping_recorded(settings, since):
            return Check(f"webhook {webhook_id} ping", OK, "a signed ping was verified and recorded end to end")
        time.sleep(PING_POLL)  # polling the database for the delivery, with a deadline
    return Check(f"webhook {webhook_id} ping", FAIL, f"no verified ping arrived within {PING_DEADLINE:g} s",
                 "check the receiver's log for rejected deliveries and that the URL reaches it")  # fmt: skip


def _ping_recorded(settings: Settings, since: object) -> bool:
    query = select(WebhookDelivery).where(
        col(WebhookDelivery.event_type) == webhooks.PING_EVENT, col(WebhookDelivery.received_at) >= since
    )
    with db.session(settings) as session:
        return session.scalars(query).first() is not None
