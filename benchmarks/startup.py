"""How long `research` takes to start, next to a bare `python -c pass` (target: under 0.3 s per command).

Runs each command N times (default 10) as a fresh process on an embedded (SQLite) database holding a few jobs,
and prints min / median / max wall time per command. No broker, worker or API is involved.

Usage: uv run --frozen python benchmarks/startup.py [--runs 10] [--jobs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from research_runner import db, store
from research_runner.constants import DEFAULT_AGENT
from research_runner.settings import load_settings

# The `research` script installed beside this interpreter: what a user types (`python -m` adds runpy, ~5 ms).
RESEARCH = [str(Path(sys.executable).with_name("research"))]


def seed(data_dir: Path, jobs: int) -> str:
    """Create the database and store `jobs` queued jobs; returns one job's id."""
    settings = load_settings(data_dir=data_dir, reports_dir=data_dir / "reports")
    db.ensure_schema(settings)
    ids = [store.add(settings, store.new_job(settings, f"Question {n}?", DEFAULT_AGENT)).id for n in range(jobs)]
    return ids[0]


def timings(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        job_id = seed(data_dir, args.jobs)
        env = {**os.environ, "RESEARCH_DATA_DIR": str(data_dir), "RESEARCH_REPORTS_DIR": str(data_dir / "reports")}
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "research --help": [*RESEARCH, "--help"],
            "research list": [*RESEARCH, "list"],
            f"research status {job_id[:8]}": [*RESEARCH, "status", job_id[:8]],
        }
        print(f"{'command':<28}{'min':>8}{'median':>8}{'max':>8}   (seconds, {args.runs} runs each)")
        for name, command in commands.items():
            seconds = timings(command, env, args.runs)
            print(f"{name:<28}{min(seconds):>8.3f}{statistics.median(seconds):>8.3f}{max(seconds):>8.3f}")


if __name__ == "__main__":
    main()
