"""A two-minute API outage at production timescale (issue 4): nothing lost, nothing created twice, prompt resume.

The test suite runs this scenario scaled down (tests/test_chaos.py: a 15 s outage against 1 s polls and 5 s
leases). This runs it at the production defaults (polls 10 s x1.5 up to 60 s, 60 s leases, 30 s request
timeout, 3 attempts per poll) with a real worker, emulator, Redis and PostgreSQL:

  1. N jobs are created with emulated durations of --durations seconds, while the emulator answers 20% of
     requests with 429 (Retry-After) or 503;
  2. once every job is running, the emulator is frozen (SIGSTOP: connections open, no answer) for --outage s;
  3. it thaws, and the run ends when every job has ended.

It prints what must hold (every job completed, one interaction and one report per job, no half-written file),
exits 1 if any of it does not, and prints how the outage went (poll attempts that failed, the longest poll
task, how long after the outage each job was polled again). Takes about 5 minutes with the defaults.

Usage: uv run python benchmarks/api_outage.py [--jobs 40] [--durations 200:240] [--outage 120]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg
import redis
from sqlmodel import select

from research_runner import db, store
from research_runner.constants import DEFAULT_AGENT
from research_runner.models import Job
from research_runner.settings import Settings, load_settings
from research_runner.status import ACTIVE_STATUSES, JobStatus

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_scale import (  # the sibling benchmark's process helpers
    API_KEY,
    PG_ADMIN_URL,
    REDIS_BASE,
    admin,
    drop_database,
    percentile,
    start_emulator,
    start_logged,
    stop,
    wait_for_log,
)

FAULTS = {"get": {"429": 0.1, "503": 0.1}, "create": {"429": 0.2}}  # 20% of answers are refusals
ANSWERED = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}).*job (\w{8}) polled: (?!no answer)")
POLL_TASK = re.compile(r"Task research\.poll\[[^\]]+\] succeeded in ([\d.]+)s")


def put_faults(url: str, faults: dict[str, dict[str, float]]) -> None:
    request = urllib.request.Request(
        url + "/_emulator/faults",
        data=json.dumps(faults).encode(),
        method="PUT",
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(1)


def job_rows(settings: Settings) -> list[Job]:
    with db.session(settings) as session:
        return list(session.exec(select(Job)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--durations", default="200:240")
    parser.add_argument("--outage", type=float, default=120.0)
    parser.add_argument("--redis-db", type=int, default=13)
    args = parser.parse_args()
    low, high = (float(v) for v in args.durations.split(":"))
    tmp = Path(tempfile.mkdtemp(prefix="api-outage-"))
    name = f"rr_outage_{uuid.uuid4().hex[:10]}"
    database_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    broker_url = f"{REDIS_BASE}/{args.redis_db}"
    redis.Redis.from_url(broker_url).flushdb()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    emulator, url = start_emulator(seed=5, latency=0.0, log_path=tmp / "emulator.log")
    worker = None
    try:
        settings = load_settings(database_url=database_url, broker_url=broker_url, reports_dir=tmp / "reports")
        db.upgrade(settings)
        env = {
            "RESEARCH_DATABASE_URL": database_url,
            "RESEARCH_BROKER_URL": broker_url,
            "RESEARCH_GEMINI_BASE_URL": url,
            "GEMINI_API_KEY": API_KEY,
            "RESEARCH_REPORTS_DIR": str(tmp / "reports"),
        }
        worker = start_logged(
            [sys.executable, "-m", "research_runner", "worker", "--loglevel", "INFO"], env, tmp / "worker.log"
        )
        wait_for_log(tmp / "worker.log", "ready.", 60, worker)
        put_faults(url, FAULTS)
        rng = random.Random(5)
        ids = [
            store.add(
                settings,
                store.new_job(
                    settings,
                    f"Outage question {i} [[emulator duration={rng.uniform(low, high):.1f}]]",
                    DEFAULT_AGENT,
                    held=False,
                ),
            ).id
            for i in range(args.jobs)
        ]
        wait(lambda: all(j.status == JobStatus.RUNNING for j in job_rows(settings)), 120, "every job running")
        print(f"{args.jobs} jobs running; emulator frozen for {args.outage:.0f} s", flush=True)
        emulator.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        while time.monotonic() - frozen < args.outage:
            if worker.poll() is not None:
                raise SystemExit("the worker died during the outage; see its log")
            time.sleep(1)
        emulator.send_signal(signal.SIGCONT)
        thawed = datetime.now()
        print("emulator answering again; waiting for every job to end", flush=True)
        wait(lambda: all(j.status not in ACTIVE_STATUSES for j in job_rows(settings)), high + 600, "every job to end")
        report(args, settings, ids, url, tmp, thawed, worker.poll() is None)
    finally:
        emulator.send_signal(signal.SIGCONT)
        if worker is not None:
            stop(worker, 20)
        stop(emulator, 10)
        db.dispose_engines()
        drop_database(name)
        shutil.rmtree(tmp, ignore_errors=True)


def report(
    args: argparse.Namespace,
    settings: Settings,
    ids: list[str],
    url: str,
    tmp: Path,
    thawed: datetime,
    worker_alive: bool,
) -> None:
    rows = job_rows(settings)
    log = (tmp / "worker.log").read_text(errors="replace")
    stats = admin(url, "/_emulator/stats")
    files = list((tmp / "reports").glob("*.md"))
    first_answer: dict[str, float] = {}
    for line in log.splitlines():
        match = ANSWERED.match(line)
        if match:
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            if at > thawed and match.group(2) not in first_answer:
                first_answer[match.group(2)] = (at - thawed).total_seconds()
    resumed = list(first_answer.values())
    poll_tasks = [float(m.group(1)) for m in POLL_TASK.finditer(log)]
    outcome = {
        "jobs completed / in run": f"{sum(j.status == JobStatus.COMPLETED for j in rows)}/{len(ids)}",
        "interactions created per job (max)": str(max(stats["creates_by_input"].values())),
        "report files / rows with a report": f"{len(files)}/{sum(1 for j in rows if j.report_path)}",
        "half-written report files": str(len(list((tmp / "reports").glob(".tmp-*")))),
        "worker alive at the end": "yes" if worker_alive else "NO",
        "task errors in worker log": str(log.count("ERROR/")),
        "poll attempts without an answer": str(log.count("polled: no answer")),
        "longest poll task s (lease 60 s)": f"{max(poll_tasks, default=0):.1f}",
        "first answered poll after the outage s": f"p50 {percentile(resumed, 0.5):.1f} / max {max(resumed):.1f} "
        f"({len(resumed)} jobs)",
    }
    print(
        f"\nAPI outage: {len(ids)} jobs, durations {args.durations} s, emulator frozen {args.outage:.0f} s, "
        f"20% of answers refused (429/503) outside it; production poll policy and leases"
    )
    for key, value in outcome.items():
        print(f"{key:42}{value}")
    broken = [
        what
        for what, held in (
            ("a job did not complete", all(j.status == JobStatus.COMPLETED for j in rows)),
            ("an interaction was created twice", max(stats["creates_by_input"].values()) == 1),
            ("reports and rows differ", len(files) == len(rows) == sum(1 for j in rows if j.report_path)),
            ("a report was left half-written", not list((tmp / "reports").glob(".tmp-*"))),
            ("the worker died", worker_alive),
        )
        if not held
    ]
    if broken:
        raise SystemExit("FAILED: " + "; ".join(broken))


if __name__ == "__main__":
    main()
