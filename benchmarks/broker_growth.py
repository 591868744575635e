"""Does the embedded SQLite broker stay flat? A compressed day of dispatch ticks and polls (issue 17).

Starts the emulator and one embedded `research worker` (SQLite database and broker) with a fast dispatch tick
and fast polls of long-running jobs, and samples the broker file every few seconds: its size, the messages
waiting, and the delivered messages kombu keeps until the tick deletes them (once a minute). The baseline, in
the same run, is what kombu alone would keep: every message ever delivered (counted from the samples), at the
average size of a stored message.

    uv run --frozen python benchmarks/broker_growth.py --minutes 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from research_runner import db, store
from research_runner.constants import DEFAULT_AGENT
from research_runner.settings import load_settings

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_scale import start_emulator


def sample(broker_file: Path) -> tuple[int, int, int, int]:
    """(file bytes, waiting messages, delivered messages kept, highest message id)."""
    engine = create_engine(f"sqlite:///{broker_file}", connect_args={"timeout": 30})
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT sum(visible = 1), sum(visible = 0), coalesce(max(id), 0) FROM kombu_message"
            )).one()  # fmt: skip
    finally:
        engine.dispose()
    return broker_file.stat().st_size, int(rows[0] or 0), int(rows[1] or 0), int(rows[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--tick", type=float, default=0.05, help="dispatch interval in seconds")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="broker-growth-"))
    emulator, url = start_emulator(3, 0.0, tmp / "emulator.log")
    env = {**os.environ, "RESEARCH_DATA_DIR": str(tmp / "data"), "RESEARCH_REPORTS_DIR": str(tmp / "reports"),
           "RESEARCH_GEMINI_BASE_URL": url, "GEMINI_API_KEY": "bench", "RESEARCH_DISPATCH_INTERVAL": str(args.tick),
           "RESEARCH_POLL_INITIAL": "0.5", "RESEARCH_POLL_MAX": "1", "RESEARCH_LEASE_SECONDS": "15"}  # fmt: skip
    settings = load_settings(data_dir=tmp / "data", reports_dir=tmp / "reports")
    db.ensure_schema(settings)
    for n in range(args.jobs):  # they run the whole benchmark, so every tick hands out polls
        store.add(settings, store.new_job(settings, f"Job {n} [[emulator duration=36000]]", DEFAULT_AGENT, held=False))
    worker = subprocess.Popen([sys.executable, "-m", "research_runner", "worker", "--loglevel", "WARNING"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    broker_file = tmp / "data" / "broker.db"
    print(f"{'t (s)':>6} {'file KiB':>9} {'waiting':>8} {'kept':>6} {'sent':>7} {'baseline KiB':>13}")
    started, delivered_total, last_kept, bytes_per_message = time.monotonic(), 0, 0, 0.0
    try:
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(10)  # a sampling period: the benchmark watches, it does not wait for a condition
            if not broker_file.exists():
                continue
            size, waiting, kept, highest = sample(broker_file)
            delivered_total = max(delivered_total, highest - waiting)
            if kept > last_kept:
                bytes_per_message = max(bytes_per_message, size / max(kept + waiting, 1))
            last_kept = kept
            baseline = delivered_total * bytes_per_message / 1024
            print(f"{time.monotonic() - started:6.0f} {size / 1024:9.0f} {waiting:8d} {kept:6d} {highest:7d} "
                  f"{baseline:13.0f}", flush=True)  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        emulator.terminate()
    ticks = args.minutes * 60 / args.tick
    print(f"{ticks:.0f} dispatch ticks (a day at 1 s is 86,400), {delivered_total} step messages delivered")


if __name__ == "__main__":
    main()
