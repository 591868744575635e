"""The webhooks phases of pipeline_scale.py (issue 12): the receiver process, its settings, and what to measure.

A webhooks phase runs the same jobs as the polling phase through the same worker command, with
`RESEARCH_WEBHOOK_URL` pointing at a `research webhooks serve` process: every create carries `webhook_config`,
the emulator pushes each interaction's end there (RS256-signed, retried on non-2xx), the receiver makes the
job's poll due and the dispatcher's next tick sends the one GET that stores it. Polling is the safety net,
every `--safety-net` seconds. `webhooks-drop` is the same with a share of deliveries dropped by the emulator
(`PUT /_emulator/webhook-faults {"drop": r}`): those jobs wait for their safety-net poll.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from research_runner import db
from research_runner.models import WebhookDelivery
from research_runner.settings import Settings

PHASES = ("webhooks", "webhooks-drop")
RECEIVER_START_TIMEOUT = 30.0


def is_webhooks(phase: str) -> bool:
    return phase in PHASES


def start_receiver(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`research webhooks serve --port 0` as its own process; returns it and the URL its first line announces."""
    command = [sys.executable, "-m", "research_runner", "webhooks", "serve", "--port", "0"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    assert process.stdout is not None
    line, deadline = b"", time.monotonic() + RECEIVER_START_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise SystemExit(f"the webhook receiver did not start; see {log_path}")
            if selector.select(0.5):
                line += os.read(process.stdout.fileno(), 1)
    return process, line.decode().strip().rsplit(" ", 1)[-1]


def receiver_env(env: dict[str, str], emulator_url: str) -> dict[str, str]:
    """The worker's settings plus where the emulator publishes its JWKS (per-request deliveries are RS256 JWTs)."""
    return {**env, "RESEARCH_WEBHOOK_JWKS_URL": emulator_url + "/_emulator/jwks.json"}


def worker_env(env: dict[str, str], receiver_url: str, safety_net: float) -> dict[str, str]:
    return {**env, "RESEARCH_WEBHOOK_URL": receiver_url, "RESEARCH_WEBHOOK_POLL_INTERVAL": str(safety_net)}


def set_drop_rate(emulator_url: str, rate: float) -> None:
    """After the emulator's reset (which restores no faults): drop this share of deliveries, seeded."""
    body = json.dumps({"drop": rate}).encode()
    request = urllib.request.Request(emulator_url + "/_emulator/webhook-faults", data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def delivery_counts(emulator_url: str) -> Counter[str]:
    with urllib.request.urlopen(emulator_url + "/_emulator/webhook-deliveries", timeout=30) as response:
        return Counter(json.loads(response.read())["counts"])


def deliveries_by_job(settings: Settings) -> dict[str, list[tuple[str, datetime]]]:
    """Job id -> (outcome, received at) of each verified delivery the receiver recorded for it."""
    found: dict[str, list[tuple[str, datetime]]] = {}
    with db.session(settings) as session:
        query = select(WebhookDelivery.job_id, WebhookDelivery.outcome, WebhookDelivery.received_at)
        for job_id, outcome, received_at in session.exec(query.where(col(WebhookDelivery.job_id).is_not(None))):
            found.setdefault(str(job_id), []).append((outcome, received_at))
    return found


def fmt_spread(values: list[float], percentile: Any) -> str:
    if not values:
        return "n/a (none)"
    return "/".join(f"{percentile(values, q):.1f}" for q in (0.5, 0.95, 1.0))


def rows(
    latency: dict[str, float],
    ends: dict[str, float],
    delivered: dict[str, list[tuple[str, datetime]]],
    counts: Counter[str],
    receiver_cpu: float,
    percentile: Any,
) -> dict[str, str]:
    """The table's webhook rows: who stored each job (a delivery or the safety net), and at what delay."""
    by_webhook = {j: s for j, s in latency.items() if any(o == "due" for o, _ in delivered.get(j, []))}
    by_net = {j: s for j, s in latency.items() if j not in by_webhook}
    outcomes = Counter(o for found in delivered.values() for o, _ in found)
    recorded = {j: min(t.timestamp() for o, t in delivered[j] if o == "due") - ends[j] for j in by_webhook}
    return {
        "deliveries sent/dropped/2xx/retried": (
            f"{counts['events']}/{counts['dropped']}/{counts['acknowledged']}/{counts['retries']}"
        ),
        "non-2xx answers (0: none in 5 s)": ", ".join(
            f"{k.removeprefix('status_')} x{v}" for k, v in sorted(counts.items()) if _failed(k)
        )
        or "none",
        "receiver outcomes": ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "none",
        "stored after a delivery: n, p95/max s": (
            f"{len(by_webhook)}, {fmt_spread(list(by_webhook.values()), percentile).split('/', 1)[1]}"
            if by_webhook
            else "0"
        ),
        "  end -> delivery recorded p50/p95/max": fmt_spread(list(recorded.values()), percentile),
        "  recorded -> stored p50/p95/max": fmt_spread([by_webhook[j] - recorded[j] for j in recorded], percentile),
        "stored by the safety net: n, max s": (f"{len(by_net)}, {max(by_net.values()):.1f}" if by_net else "0"),
        "receiver CPU s": f"{receiver_cpu:.1f}",
    }


def _failed(count_name: str) -> bool:
    return count_name.startswith("status_") and not count_name.removeprefix("status_").startswith("2")


def empty_rows() -> dict[str, str]:
    keys = rows({}, {}, {}, Counter(), 0.0, lambda v, q: 0.0)
    return dict.fromkeys(keys, "n/a")
