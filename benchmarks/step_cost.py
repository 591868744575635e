"""CPU per worker step (issue 16): a create and a poll through `start_many` / `poll_many`, as a worker runs them.

Starts the emulator (research lasting an hour, so every poll finds it running) and a fresh PostgreSQL database,
inserts N queued jobs, creates them in messages of JOBS_PER_MESSAGE on a thread pool of the worker's size, then
polls them all --polls times the same way. Prints the CPU seconds of this process per create and per poll
(`time.process_time`: every thread, Celery's own per-message work not included), and the wall time, twice in
one process: with the garbage collector as Python sets it up, then as a worker process runs it, with what it
loaded for good frozen (worker.freeze_long_lived).

Usage: uv run python benchmarks/step_cost.py [--jobs 800] [--polls 3] [--threads 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_scale import PG_ADMIN_URL, drop_database, start_emulator, stop  # the sibling's process helpers

from research_runner import db, lifecycle, store
from research_runner.constants import DEFAULT_AGENT
from research_runner.gateway import Gateway
from research_runner.settings import Settings, load_settings
from research_runner.worker import JOBS_PER_MESSAGE, freeze_long_lived

WARM_UP_JOBS = 16


def per_message(ids: list[str], step: Callable[[list[str]], object]) -> float:
    """Run `step` on every message of ids, four messages at once as a threads-pool worker does; CPU seconds."""
    messages = [ids[at : at + JOBS_PER_MESSAGE] for at in range(0, len(ids), JOBS_PER_MESSAGE)]
    started = time.process_time()
    with ThreadPoolExecutor(max_workers=4) as outer:
        list(outer.map(step, messages))
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=800)
    parser.add_argument("--polls", type=int, default=3)
    parser.add_argument("--threads", type=int, default=32)  # the worker's, with --concurrency 4
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    name = f"rr_steps_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    tmp = Path(tempfile.mkdtemp(prefix="step-cost-"))
    emulator, url = start_emulator(1, 0.0, tmp / "emulator.log", "--duration", "3600:3600")
    try:
        os.environ["GEMINI_API_KEY"] = "bench-key"  # the emulator takes any key
        settings = load_settings(database_url=f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", gemini_base_url=url,
                                 reports_dir=tmp / "reports")  # fmt: skip
        db.upgrade(settings)
        print(f"step CPU: {args.jobs} jobs, {JOBS_PER_MESSAGE} per message, {args.threads} step threads, PostgreSQL")
        gateway = Gateway(settings)
        gc.callbacks.append(collector_time)
        for _ in range(args.rounds):  # in turn, so that neither setting always runs on the fuller database
            gc.unfreeze()
            run(settings, gateway, args, "gc as Python sets it up")
            freeze_long_lived()
            run(settings, gateway, args, "gc with the long-lived objects frozen (the worker)")
    finally:
        stop(emulator, 10)
        db.dispose_engines()
        drop_database(name)


GC_TIME = {"started": 0.0, "total": 0.0}


def collector_time(phase: str, info: dict[str, int]) -> None:
    """CPU seconds spent in the garbage collector (gc.callbacks)."""
    if phase == "start":
        GC_TIME["started"] = time.process_time()
    else:
        GC_TIME["total"] += time.process_time() - GC_TIME["started"]


def run(settings: Settings, gateway: Gateway, args: argparse.Namespace, label: str) -> None:
    ids = [store.add(settings, store.new_job(settings, f"question {n}", DEFAULT_AGENT, held=False)).id
           for n in range(args.jobs + WARM_UP_JOBS)]  # fmt: skip
    warm, ids = ids[:WARM_UP_JOBS], ids[WARM_UP_JOBS:]
    with ThreadPoolExecutor(max_workers=args.threads) as threads:
        lifecycle.start_many(settings, gateway, warm, threads.map)
        lifecycle.poll_many(settings, gateway, warm, threads.map)
        wall, in_gc = time.monotonic(), GC_TIME["total"]
        create = per_message(ids, lambda m: lifecycle.start_many(settings, gateway, m, threads.map))
        create_wall, wall = time.monotonic() - wall, time.monotonic()
        poll = sum(
            per_message(ids, lambda m: lifecycle.poll_many(settings, gateway, m, threads.map))
            for _ in range(args.polls)
        )
        poll_wall = time.monotonic() - wall
    n_polls, in_gc = args.jobs * args.polls, GC_TIME["total"] - in_gc
    print(f"{label}: {in_gc:.2f} s of {create + poll:.2f} s CPU in the garbage collector")
    print(f"create  {create * 1000 / args.jobs:6.2f} ms CPU  ({args.jobs} in {create_wall:.1f} s wall)")
    print(f"poll    {poll * 1000 / n_polls:6.2f} ms CPU  ({n_polls} in {poll_wall:.1f} s wall)")


if __name__ == "__main__":
    main()
