"""Pipeline at scale (issue 4): N emulated deep-research jobs through one real `research worker` process.

Starts the emulator and the worker as separate processes, with Redis (127.0.0.1:6379, a dedicated db) as
broker and a fresh PostgreSQL database, inserts N jobs whose emulated durations are drawn from a seeded range
(`[[emulator duration=S]]` in each question) and lets the dispatcher pick them up. Then it does the same work
the notebook way, a Celery task per job that loops `get` + `sleep(interval)`, at the same concurrency and
pool; that baseline holds one slot per waiting job, so it runs for at most --baseline-seconds and its
makespan is projected from the slot time of the jobs it finished. The `webhooks` and `webhooks-drop` phases
(issue 12, pipeline_webhooks.py) run the same jobs again with a webhook receiver and polling as the safety net.

Usage: uv run python benchmarks/pipeline_scale.py [--jobs 2000] [--durations 60:150] [--concurrency 4]
       [--pool prefork|threads] [--poll-initial 10 --poll-multiplier 1.5 --poll-max 15 --poll-jitter 0.1]
       [--dispatch-interval 1] [--baseline-seconds 150] [--phases design,baseline] [--keep-logs]
       [--safety-net 150] [--drop-rate 0.1]   (phases webhooks, webhooks-drop: see pipeline_webhooks.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pipeline_webhooks as webhooks  # the webhooks phases (issue 12)
import psycopg
import redis
from celery import Celery
from celery.utils.log import get_task_logger
from sqlalchemy import func
from sqlmodel import col, select

from research_runner import batches, db, lifecycle, outcome, store
from research_runner.batchfile import Item
from research_runner.constants import DEFAULT_AGENT
from research_runner.exceptions import RetryableError, ServiceUnavailable
from research_runner.gateway import Gateway
from research_runner.models import Job
from research_runner.settings import Settings, load_settings
from research_runner.status import ACTIVE_STATUSES, REMOTE_TERMINAL

PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
API_KEY = "bench-key"
UNFINISHED_ERROR_CHARS = 70  # of a job's error, in the table
SPEED_LOOP = 10_000_000
BASELINE_TASK, BASELINE_QUEUE = "baseline.wait", "baseline"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
POLLED = re.compile(r"polled: (.+?) \((-?[\d.]+) s late\)")
SUCCEEDED = re.compile(r"Task (research\.poll|research\.submit|research\.dispatch)\[[^\]]+\] succeeded in ([\d.]+)s")
BASELINE_DONE = re.compile(r"baseline job \w+ done after (\d+) gets")


# ---------------------------------------------------------------- baseline: the notebook loop as a Celery task
def baseline_app(settings: Settings, interval: float) -> Celery:
    app = Celery("baseline", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=BASELINE_QUEUE, task_ignore_result=True, task_acks_late=True, worker_prefetch_multiplier=1
    )
    log = get_task_logger("baseline")
    gateways: dict[int, Gateway] = {}

    @app.task(name=BASELINE_TASK, shared=False)  # type: ignore[untyped-decorator]
    def wait(job_id: str) -> None:
        if os.getpid() not in gateways:  # one SDK client per pool process, never shared across a fork
            gateways[os.getpid()] = Gateway(settings)
        gateway = gateways[os.getpid()]
        lifecycle.start(settings, gateway, job_id)  # create the interaction, as the notebook does first
        job = store.load(settings, job_id)
        if job is None or not job.interaction_id:
            return
        gets = 0
        while True:
            gets += 1
            try:
                snapshot = gateway.get(job.interaction_id)
            except RetryableError:
                time.sleep(interval)
                continue
            if snapshot.status in REMOTE_TERMINAL:
                outcome.finish(settings, job, snapshot)
                log.info("baseline job %s done after %d gets", job_id[:8], gets)
                return
            time.sleep(interval)

    return app


def run_baseline_worker(args: argparse.Namespace) -> None:
    settings = load_settings()
    app = baseline_app(settings, args.interval)
    app.worker_main(
        [
            "worker",
            f"--concurrency={args.concurrency}",
            f"--pool={args.pool}",
            "--loglevel=INFO",
            "-Q",
            BASELINE_QUEUE,
            "--without-gossip",
            "--without-mingle",
        ]
    )


# ---------------------------------------------------------------- processes and resources
def postgres_backends(database: str) -> list[int]:
    """The server processes serving `database` (their title names it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if f" {database} ".encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


def proc_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def cpu_and_rss(pid: int) -> tuple[float, int]:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / TICK, rss


@dataclass
class Sampler:
    """Peak summed RSS and CPU seconds of a set of processes, sampled every `period` seconds in a thread."""

    pids: Callable[[], list[int]]
    delta: bool = False  # count only CPU used from the first sample on (processes that outlive the phase)
    period: float = 0.5
    peak_rss: int = 0
    cpu: dict[int, float] = field(default_factory=dict)
    start: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        rss = 0
        for pid in self.pids():
            seconds, pid_rss = cpu_and_rss(pid)
            self.start.setdefault(pid, seconds if self.delta else 0.0)
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), seconds)
            rss += pid_rss
        self.peak_rss = max(self.peak_rss, rss)

    def __enter__(self) -> Sampler:
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.sample()

    @property
    def cpu_seconds(self) -> float:
        return sum(seconds - self.start[pid] for pid, seconds in self.cpu.items())


def machine_busy() -> tuple[float, float]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)  # busy, total jiffies (idle and iowait excluded)


def start_logged(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], grace: float) -> None:
    if process.poll() is None:
        process.terminate()  # warm shutdown: the main process stops its pool children itself
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group (it has its own session)
    process.wait(timeout=10)


def start_emulator(seed: int, latency: float, log_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    command = [
        sys.executable,
        "-m",
        "research_emulator",
        "--port",
        "0",
        "--seed",
        str(seed),
        "--retention",
        "3600",
        *extra,
    ]
    if latency:  # every API call is held this long before it is served, as a real API over the internet would
        command += ["--fault", "create:slow=1", "--fault", "get:slow=1", "--slow-delay", str(latency)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    assert process.stdout is not None
    line, deadline = b"", time.monotonic() + 30
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or process.poll() is not None:
                stop(process, 1)
                raise SystemExit(f"emulator did not start; see {log_path}")
            if selector.select(0.5):
                line += os.read(process.stdout.fileno(), 1)
    return process, line.decode().strip().removeprefix("Emulator listening on ")


def admin(url: str, path: str, method: str = "GET") -> Any:
    with urllib.request.urlopen(urllib.request.Request(url + path, method=method), timeout=30) as response:
        return json.loads(response.read())


def wait_for_log(path: Path, needle: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not become ready; see {path}")
        time.sleep(0.2)


# ---------------------------------------------------------------- one phase (design or baseline)
@dataclass
class Phase:
    name: str
    jobs: list[Job]
    durations: dict[str, float]
    ends: dict[str, float]  # job id -> wall time its interaction actually ended (emulator create + duration)
    elapsed: float
    complete: bool
    gets: int
    cpu: float
    peak_rss: int
    emulator_cpu: float
    postgres_cpu: float
    machine_busy: float
    log: str
    creates: int = 0
    webhook_rows: dict[str, str] = field(default_factory=webhooks.empty_rows)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def insert_jobs(settings: Settings, durations: list[float], how: str) -> dict[str, float]:
    questions = [f"Benchmark question {i} [[emulator duration={d:.2f}]]" for i, d in enumerate(durations)]
    if how == "batch":  # as `research batch FILE` stores them: one transaction, all due at once
        with db.session(settings) as session:
            batch, _ = batches.add(settings, session, "benchmark", [Item(q) for q in questions], DEFAULT_AGENT)
            session.flush()
            rows = session.exec(select(Job.id, Job.question).where(col(Job.batch_id) == batch.id)).all()
        by_question = dict(zip(questions, durations, strict=True))
        return {job_id: by_question[question] for job_id, question in rows}
    # One by one, as `research submit` does, but not held: the dispatcher takes each job at once (submit holds
    # a job so that it can send the first step itself).
    return {
        store.add(settings, store.new_job(settings, q, DEFAULT_AGENT, held=False)).id: d
        for q, d in zip(questions, durations, strict=True)
    }


def worker_command(name: str, args: argparse.Namespace) -> list[str]:
    if name == "design" or webhooks.is_webhooks(name):
        return [
            sys.executable,
            "-m",
            "research_runner",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(args.concurrency),
            "--pool",
            args.pool,
        ]
    return [
        sys.executable,
        __file__,
        "baseline-worker",
        "--concurrency",
        str(args.concurrency),
        "--pool",
        args.pool,
        "--interval",
        str(args.baseline_interval),
    ]


def actual_ends(emulator_url: str, rows: list[Job]) -> dict[str, float]:
    """Wall time each interaction really ended: the emulator's create time plus its drawn duration."""
    ends = {}
    for row in rows:
        if row.interaction_id:
            seen = time.time()
            info = admin(emulator_url, f"/_emulator/interactions/{row.interaction_id}")
            ends[row.id] = seen - info["elapsed"] + info["duration"]
    return ends


@contextlib.contextmanager
def receiver_for(
    name: str, args: argparse.Namespace, env: dict[str, str], emulator_url: str, logs: Path
) -> Iterator[tuple[dict[str, str], Sampler | None]]:
    """For a webhooks phase: a running receiver, the worker's env pointing at it, and a sampler of its CPU."""
    if not webhooks.is_webhooks(name):
        yield env, None
        return
    if name == "webhooks-drop":
        webhooks.set_drop_rate(emulator_url, args.drop_rate)
    receiver, url = webhooks.start_receiver(webhooks.receiver_env(env, emulator_url), logs / f"{name}-receiver.log")
    try:
        with Sampler(lambda: [receiver.pid]) as sampler:
            yield webhooks.worker_env(env, url, args.safety_net), sampler
    finally:
        stop(receiver, 5)


def run_phase(
    name: str,
    args: argparse.Namespace,
    env: dict[str, str],
    settings: Settings,
    emulator_url: str,
    emulator_pid: int,
    durations: list[float],
    logs: Path,
) -> Phase:
    with receiver_for(name, args, env, emulator_url, logs) as (phase_env, receiver):
        phase = run_worker(name, args, phase_env, settings, emulator_url, emulator_pid, durations, logs)
    if receiver is not None:
        latency = stored_latency(phase)
        delivered = webhooks.deliveries_by_job(settings)
        counts = webhooks.delivery_counts(emulator_url)
        phase.webhook_rows = webhooks.rows(latency, phase.ends, delivered, counts, receiver.cpu_seconds, percentile)
    return phase


def stored_latency(phase: Phase) -> dict[str, float]:
    """Job id -> seconds from its interaction's real end to its row being finished (completion -> stored)."""
    return {r.id: r.finished_at.timestamp() - phase.ends[r.id] for r in phase.jobs
            if r.finished_at is not None and r.id in phase.ends}  # fmt: skip


def run_worker(
    name: str,
    args: argparse.Namespace,
    env: dict[str, str],
    settings: Settings,
    emulator_url: str,
    emulator_pid: int,
    durations: list[float],
    logs: Path,
) -> Phase:
    log_path = logs / f"{name}-worker.log"
    worker = start_logged(worker_command(name, args), env, log_path)
    database = settings.database_url.rsplit("/", 1)[1]
    try:
        wait_for_log(log_path, "ready.", 60, worker)
        emulator, pg = Sampler(lambda: [emulator_pid], delta=True), Sampler(lambda: postgres_backends(database), True)
        emulator.sample()
        busy0, total0 = machine_busy()
        with Sampler(lambda: proc_tree(worker.pid)) as sampler, pg:
            started = time.monotonic()
            by_id = insert_jobs(settings, durations, args.submit)
            if name == "baseline":
                sender = Celery("sender", broker=settings.broker_url, set_as_current=False)
                for job_id in by_id:
                    sender.send_task(BASELINE_TASK, args=[job_id], queue=BASELINE_QUEUE)
            cap = args.baseline_seconds if name == "baseline" else args.timeout
            complete = wait_until_done(settings, started, cap, worker)
            elapsed = time.monotonic() - started
        busy1, total1 = machine_busy()
        emulator.sample()
    finally:
        stop(worker, 2 if name == "baseline" else 20)  # baseline tasks sleep for minutes: no warm shutdown
    requests = admin(emulator_url, "/_emulator/stats")["requests"]
    gets, creates = (sum(requests.get(kind, {}).values()) for kind in ("get", "create"))
    with db.session(settings) as session:
        rows = list(session.exec(select(Job)))
    busy = (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)
    return Phase(
        name,
        rows,
        by_id,
        actual_ends(emulator_url, rows),
        elapsed,
        complete,
        gets,
        sampler.cpu_seconds,
        sampler.peak_rss,
        emulator.cpu_seconds,
        pg.cpu_seconds,
        busy,
        log_path.read_text(errors="replace"),
        creates,
    )


def wait_until_done(settings: Settings, started: float, cap: float, worker: subprocess.Popen[bytes]) -> bool:
    last = 0.0
    while time.monotonic() - started < cap:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited with code {worker.returncode} mid-run; see its log")
        try:
            with db.session(settings) as session:
                active = session.execute(
                    select(func.count()).select_from(Job).where(col(Job.status).in_([str(s) for s in ACTIVE_STATUSES]))
                ).scalar_one()
        except ServiceUnavailable:  # the shared server restarted (someone's chaos test): the worker copes too
            time.sleep(1)
            continue
        if active == 0:
            return True
        if time.monotonic() - last > 15:
            print(f"  {time.monotonic() - started:6.0f} s: {active} jobs active", flush=True)
            last = time.monotonic()
        time.sleep(1)
    return False


# ---------------------------------------------------------------- metrics and the table
def metrics(phase: Phase, args: argparse.Namespace) -> dict[str, str]:
    n, rows = len(phase.durations), phase.jobs
    done = [r for r in rows if r.finished_at is not None]
    t0 = min(r.created_at for r in rows).timestamp()
    bound = max(r.created_at.timestamp() + phase.durations[r.id] for r in rows) - t0
    latency = list(stored_latency(phase).values())
    lateness = [float(m.group(2)) for m in POLLED.finditer(phase.log)]
    task_times = [float(m.group(2)) for m in SUCCEEDED.finditer(phase.log) if m.group(1) == "research.poll"]
    if phase.complete:
        makespan = max(r.finished_at.timestamp() for r in done) - t0  # type: ignore[union-attr]
        span_note = ""
        gets_per_job = phase.gets / n
    else:  # each slot runs its jobs one after another: project from durations + the measured slot overhead
        overhead = (
            statistics.fmean(
                r.finished_at.timestamp()  # type: ignore[union-attr]
                - r.submitted_at.timestamp()  # type: ignore[union-attr]
                - phase.durations[r.id]
                for r in done
            )
            if done
            else float("nan")
        )
        makespan = (sum(phase.durations.values()) + n * overhead) / args.concurrency
        span_note = f" (projected: (sum of durations + {n} x {overhead:.1f} s) / {args.concurrency} slots)"
        gets = [int(m.group(1)) for m in BASELINE_DONE.finditer(phase.log)]
        gets_per_job = statistics.fmean(gets) if gets else float("nan")
    others = phase.machine_busy - (phase.cpu + phase.emulator_cpu + phase.postgres_cpu) / phase.elapsed
    most_polls = "n/a" if phase.name == "baseline" else str(max((r.poll_count for r in rows), default=0))
    submit_delay = [(r.submitted_at - r.created_at).total_seconds() for r in rows if r.submitted_at]
    return {
        "jobs finished / in run": f"{len(done)}/{n} in {phase.elapsed:.0f} s",
        "not finished: how many, status: error": unfinished(rows),
        "task errors in worker log": str(phase.log.count("raised unexpected")),
        "makespan s": f"{makespan:.0f}{span_note}",
        "lower bound s (longest job)": f"{bound:.0f}",
        "makespan / lower bound": f"{makespan / bound:.2f}",
        "create delay p50/max s": f"{percentile(submit_delay, 0.5):.1f} / {max(submit_delay, default=0):.1f}",
        "API GETs per job (max per job)": f"{gets_per_job:.2f} ({most_polls})",
        "API creates per job": f"{phase.creates / n:.2f}",
        "completion->stored p50/p95/max s": "/".join(f"{percentile(latency, q):.1f}" for q in (0.5, 0.95, 1.0)),
        "poll lateness p50/p99 s": (
            f"{percentile(lateness, 0.5):.2f} / {percentile(lateness, 0.99):.2f}" if lateness else "n/a (no schedule)"
        ),
        "poll task time p50/p99 ms": (
            f"{percentile(task_times, 0.5) * 1000:.0f} / {percentile(task_times, 0.99) * 1000:.0f}"
            if task_times
            else "n/a"
        ),
        "worker CPU s (per job)": f"{phase.cpu:.0f} ({phase.cpu / max(1, len(done)):.2f})",
        "worker peak RSS MB (tree)": f"{phase.peak_rss / 2**20:.0f}",
        "emulator / PostgreSQL CPU s": f"{phase.emulator_cpu:.0f} / {phase.postgres_cpu:.0f}",
        "machine busy, cores (others)": f"{phase.machine_busy:.2f} ({others:.2f})",
    } | phase.webhook_rows


def unfinished(rows: list[Job]) -> str:
    """What became of the jobs that did not finish, the two commonest first: a run's errors at a glance."""

    def error(row: Job) -> str:  # one line, and no column separator if the table is pasted into Markdown
        return " ".join((row.error or "-").split()).replace("|", "/")[:UNFINISHED_ERROR_CHARS]

    left = Counter(f"{r.status}: {error(r)}" for r in rows if r.finished_at is None)
    return "; ".join(f"{count} {what}" for what, count in left.most_common(2)) or "none"


def python_speed() -> float:
    """CPU seconds of a fixed pure-Python loop: this VM's speed varies ~2x between days, so runs of different
    days compare only beside this figure."""

    def one() -> float:
        started, total = time.process_time(), 0
        for n in range(SPEED_LOOP):
            total += n
        return time.process_time() - started

    return min(one() for _ in range(3))


def print_table(args: argparse.Namespace, results: list[dict[str, str]], names: list[str]) -> None:
    print(
        f"\npipeline at scale: {args.jobs} jobs, durations {args.durations} s (seed {args.seed}), "
        f"pool {args.pool} x{args.concurrency}, poll {args.poll_initial}x{args.poll_multiplier}->"
        f"{args.poll_max} s ±{args.poll_jitter}, dispatch every {args.dispatch_interval} s, "
        f"API latency {args.api_latency} s, jobs stored {args.submit}; webhooks: safety-net poll every "
        f"{args.safety_net} s, webhooks-drop drops {args.drop_rate:.0%} of deliveries; "
        f"baseline sleeps {args.baseline_interval} s, capped at {args.baseline_seconds} s; {os.cpu_count()} CPUs; "
        f"this machine's speed: a {SPEED_LOOP:,}-step Python loop in {python_speed():.2f} s CPU (best of 3)"
    )
    widths = [40] + [max(14, *(len(r[k]) for k in r)) + 2 for r in results]
    print("".join(h.ljust(w) for h, w in zip(["metric", *names], widths, strict=True)))
    for key in results[0]:
        print("".join(v.ljust(w) for v, w in zip([key, *(r[key] for r in results)], widths, strict=True)))


# ---------------------------------------------------------------- setup and main
def worker_env(
    args: argparse.Namespace, database_url: str, broker_url: str, emulator_url: str, reports: Path
) -> dict[str, str]:
    return {
        "RESEARCH_DATABASE_URL": database_url,
        "RESEARCH_BROKER_URL": broker_url,
        "RESEARCH_GEMINI_BASE_URL": emulator_url,
        "GEMINI_API_KEY": API_KEY,
        "RESEARCH_REPORTS_DIR": str(reports),
        "RESEARCH_POLL_INITIAL": str(args.poll_initial),
        "RESEARCH_POLL_MULTIPLIER": str(args.poll_multiplier),
        "RESEARCH_POLL_MAX": str(args.poll_max),
        "RESEARCH_POLL_JITTER": str(args.poll_jitter),
        "RESEARCH_DISPATCH_INTERVAL": str(args.dispatch_interval),
    }


def reset_stores(settings: Settings, broker: redis.Redis, emulator_url: str) -> None:
    with psycopg.connect(settings.database_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("TRUNCATE jobs, webhook_deliveries")
    broker.flushdb()
    admin(emulator_url, "/_emulator/reset", "POST")


def drop_database(name: str) -> None:
    for attempt in range(10):  # the server may be restarting (other people's chaos tests share it)
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.OperationalError:
            if attempt == 9:
                raise
            time.sleep(2)


def _interrupted(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # unwinds through the finally blocks: all is cleaned up


def bench(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)  # also when started in the background, where SIGINT is ignored
    lo, hi = (float(x) for x in args.durations.split(":"))
    rng = random.Random(args.seed)
    durations = [rng.uniform(lo, hi) for _ in range(args.jobs)]
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-scale-"))
    name = f"rr_bench_{uuid.uuid4().hex[:10]}"
    database_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    broker_url = f"{REDIS_BASE}/{args.redis_db}"
    broker = redis.Redis.from_url(broker_url)
    emulator: subprocess.Popen[bytes] | None = None
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        emulator, emulator_url = start_emulator(args.seed, args.api_latency, tmp / "emulator.log")
        env = worker_env(args, database_url, broker_url, emulator_url, tmp / "reports")
        settings = load_settings(database_url=database_url, broker_url=broker_url, reports_dir=tmp / "reports")
        phases = [p for p in args.phases.split(",") if p]
        results = []
        for phase_name in phases:
            db.upgrade(settings)  # again per phase: the schema may have moved on while the previous one ran
            reset_stores(settings, broker, emulator_url)
            print(f"{phase_name}: {args.jobs} jobs ...", flush=True)
            phase = run_phase(phase_name, args, env, settings, emulator_url, emulator.pid, durations, tmp)
            results.append(metrics(phase, args))
        print_table(args, results, phases)
    finally:
        if emulator is not None:
            stop(emulator, 10)
        broker.flushdb()
        broker.close()
        db.dispose_engines()
        drop_database(name)
        if args.keep_logs:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("baseline-worker", help="internal: the baseline Celery worker (env gives the settings)")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--durations", default="60:150", help="MIN:MAX emulated seconds, drawn uniformly")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--poll-initial", type=float, default=10.0)
    parser.add_argument("--poll-multiplier", type=float, default=1.5)
    parser.add_argument("--poll-max", type=float, default=15.0)
    parser.add_argument("--poll-jitter", type=float, default=0.1)
    parser.add_argument("--dispatch-interval", type=float, default=1.0)
    parser.add_argument("--api-latency", type=float, default=0.0, help="seconds the emulator holds every call")
    parser.add_argument(
        "--submit",
        choices=["each", "batch"],
        default="each",
        help="jobs stored one by one (research submit) or in one transaction (research batch)",
    )
    parser.add_argument("--baseline-interval", type=float, default=None, help="baseline sleep (default: --poll-max)")
    parser.add_argument("--baseline-seconds", type=float, default=150.0, help="cap on the baseline's run time")
    parser.add_argument(
        "--phases", default="design,baseline", help="which runs, in order: design,baseline,webhooks,webhooks-drop"
    )
    parser.add_argument("--safety-net", type=float, default=150.0, help="webhooks phases: safety-net poll interval")
    parser.add_argument("--drop-rate", type=float, default=0.1, help="webhooks-drop: share of deliveries dropped")
    parser.add_argument("--timeout", type=float, default=900.0, help="cap on the design's run time")
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--keep-logs", action="store_true")
    for p in (parser, worker):
        p.add_argument("--concurrency", type=int, default=4)
        p.add_argument("--pool", choices=["prefork", "threads"], default="prefork")
    worker.add_argument("--interval", type=float, default=15.0)
    args = parser.parse_args(argv)
    if getattr(args, "baseline_interval", 0) is None:
        args.baseline_interval = args.poll_max
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    run_baseline_worker(arguments) if arguments.command == "baseline-worker" else bench(arguments)
