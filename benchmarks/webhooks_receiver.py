"""Verified webhook deliveries per second through `research webhooks serve` (target: >= 500/s on 2 cores).

Starts the receiver as its own process on a fresh database (SQLite in a temp folder, or --database-url),
stores N running jobs and one static webhook secret, signs one `interaction.completed` delivery per job
beforehand (Standard Webhooks HMAC, as the API signs), then posts them from a pool of keep-alive connections.
Every delivery is verified, recorded once and makes its job's poll due; the figure counts 200 answers only,
and the database is checked afterwards (one row per delivery, every job due).

Usage: uv run python benchmarks/webhooks_receiver.py [--deliveries 3000] [--threads 16] [--database-url URL]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, select
from standardwebhooks import Webhook

from research_runner import db, store, webhooks
from research_runner.models import Job, WebhookDelivery
from research_runner.settings import load_settings
from research_runner.status import JobStatus, utcnow

SECRET = "whsec_" + "YmVuY2htYXJrLXNlY3JldC1iZW5jaG1hcmstc2VjcmV0"
TARGET = 500.0
Deliveries = list[tuple[bytes, dict[str, str]]]


def prepare(
    database_url: str | None, data_dir: str, count: int
) -> tuple[dict[str, str], list[tuple[bytes, dict[str, str]]]]:
    env = {"RESEARCH_DATA_DIR": data_dir, **({"RESEARCH_DATABASE_URL": database_url} if database_url else {})}
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    db.ensure_schema(settings)
    webhooks.save_secret(settings, "bench", "http://127.0.0.1/webhooks", SECRET)
    later = utcnow() + timedelta(hours=1)
    with db.session(settings) as session:
        for i in range(count):
            job = store.new_job(settings, f"question {i}", "deep-research-preview-04-2026", held=False)
            job.status, job.interaction_id, job.next_poll_at = JobStatus.RUNNING, f"v1_bench_{i}", later
            session.add(job)
    with db.session(settings) as session:
        jobs = [(row[0], row[1]) for row in session.execute(select(Job.id, Job.interaction_id))]  # type: ignore[call-overload]
    signer, now = Webhook(SECRET), datetime.now(UTC)
    deliveries = []
    for n, (job_id, interaction_id) in enumerate(jobs):
        body = json.dumps({"type": "interaction.completed", "data": {"id": interaction_id,
                           "user_metadata": {"research_runner_job": job_id}}}).encode()  # fmt: skip
        headers = {"content-type": "application/json", "webhook-id": f"msg_{n}",
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": signer.sign(f"msg_{n}", now, body.decode())}  # fmt: skip
        deliveries.append((body, headers))
    return env, deliveries


def start_receiver(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    command = [sys.executable, "-m", "research_runner", "webhooks", "serve", "--port", "0"]
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            if selector.select(20):
                line += os.read(process.stdout.fileno(), 1)
    return process, line.decode().strip().rsplit(" ", 1)[-1]


def send_all(url: str, deliveries: list[tuple[bytes, dict[str, str]]], threads: int) -> tuple[float, list[float], int]:
    parts = urlsplit(url)
    chunks = [deliveries[i::threads] for i in range(threads)]

    def run(chunk: list[tuple[bytes, dict[str, str]]]) -> tuple[list[float], int]:
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        latencies, ok = [], 0
        for body, headers in chunk:
            started = time.perf_counter()
            connection.request("POST", parts.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            ok += response.status == 200
        connection.close()
        return latencies, ok

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(run, chunks))
    elapsed = time.perf_counter() - started
    return elapsed, [x for latencies, _ in results for x in latencies], sum(ok for _, ok in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        env, deliveries = prepare(args.database_url, data_dir, args.deliveries)
        process, url = start_receiver(env)
        try:
            send_all(url, deliveries[:50], 4)  # warm-up: connections, imports, the secrets cache
            elapsed, latencies, ok = send_all(url, deliveries[50:], args.threads)
        finally:
            process.terminate()
            process.wait(timeout=10)
        settings = load_settings(data_dir=data_dir, database_url=args.database_url)
        with db.session(settings) as session:
            recorded = session.scalar(select(func.count()).select_from(WebhookDelivery))
            due = session.scalar(select(func.count()).select_from(Job).where(Job.next_poll_at <= utcnow()))  # type: ignore[arg-type, operator]
    rate = ok / elapsed
    cuts = statistics.quantiles(latencies, n=100)
    print(f"database: {settings.database_url.split('@')[-1]}; cores: {os.cpu_count()}; threads: {args.threads}")
    print(f"{ok}/{len(latencies)} deliveries answered 200 in {elapsed:.2f} s: {rate:.0f}/s (target {TARGET:.0f}/s)")
    print(f"latency p50 {cuts[49] * 1000:.1f} ms, p95 {cuts[94] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms")
    print(f"recorded {recorded} deliveries, {due} jobs due (expected {len(deliveries)} each)")


if __name__ == "__main__":
    main()
