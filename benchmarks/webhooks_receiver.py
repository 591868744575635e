"""Verified webhook deliveries per second through `research webhooks serve` (target: >= 500/s on 2 cores).

Starts the receiver as its own process on a fresh database (SQLite in a temp folder, or --database-url),
stores N running jobs and one static webhook secret, signs one `interaction.completed` delivery per job
beforehand (Standard Webhooks HMAC, as the API signs), then posts them from a pool of keep-alive connections.
Every delivery is verified, recorded once and makes its job's poll due; the figure counts 200 answers only,
and the database is checked afterwards (one row per delivery, every job due). Two receivers in the same run:
group commit (the default) and the baseline RESEARCH_WEBHOOK_BATCH=1 (a commit per delivery); each gets its own
fresh database. The receiver's CPU seconds (from /proc) are reported per delivery, as the sender shares the cores.

Usage: uv run python benchmarks/webhooks_receiver.py [--deliveries 3000] [--threads 16] [--postgres ADMIN_URL]
(--postgres: a throw-away database is created on that server and dropped afterwards)
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


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115 (one read)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def run(database_url: str | None, count: int, threads: int, batch: int) -> tuple[str, ...]:
    with tempfile.TemporaryDirectory() as data_dir:
        env, deliveries = prepare(database_url, data_dir, count)
        process, url = start_receiver({**env, "RESEARCH_WEBHOOK_BATCH": str(batch)})
        try:
            send_all(url, deliveries[:50], 4)  # warm-up: connections, imports, the secrets cache
            cpu = cpu_seconds(process.pid)
            elapsed, latencies, ok = send_all(url, deliveries[50:], threads)
            cpu = cpu_seconds(process.pid) - cpu
        finally:
            process.terminate()
            process.wait(timeout=10)
        settings = load_settings(data_dir=data_dir, database_url=database_url)
        with db.session(settings) as session:
            recorded = session.scalar(select(func.count()).select_from(WebhookDelivery))
            due = session.scalar(select(func.count()).select_from(Job).where(Job.next_poll_at <= utcnow()))  # type: ignore[arg-type, operator]
    assert recorded == due == count, f"recorded {recorded}, due {due}, expected {count}"
    cuts = statistics.quantiles(latencies, n=100)
    mode = "group commit" if batch > 1 else "commit per delivery"
    return (mode, f"{ok}/{len(latencies)}", f"{ok / elapsed:.0f}", f"{cuts[49] * 1000:.1f}", f"{cuts[98] * 1000:.1f}",
            f"{cpu / ok * 1000:.2f}", f"{ok / cpu:.0f}" if cpu else "-")  # fmt: skip


def throwaway_database(admin_url: str) -> str:
    import psycopg

    name = f"rr_bench_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return admin_url.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    db.dispose_engines()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server (a throw-away db)")
    args = parser.parse_args()
    rows = []
    for batch in (100, 1):
        url = throwaway_database(args.postgres) if args.postgres else None
        try:
            rows.append(run(url, args.deliveries, args.threads, batch))
        finally:
            if url and args.postgres:
                drop_database(args.postgres, url)
    backend = "PostgreSQL (throw-away db)" if args.postgres else "SQLite (temp folder)"
    print(f"database: {backend}; cores: {os.cpu_count()}; sender threads: {args.threads}; target {TARGET:.0f}/s")
    header = ("receiver", "200s", "deliveries/s", "p50 ms", "p99 ms", "receiver CPU ms/delivery", "CPU-bound /s")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in (header, *rows):
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
