"""The makespan a poll schedule allows (issue 16): how long the creates of a burst may take for a target to hold.

A model, not a run: N jobs with durations drawn uniformly from --durations are created evenly over T seconds
after the submit, then polled on the product's own schedule (`lifecycle.common.backoff_delay`, jitter
included) with no lateness and no time to store. A job is noticed at its first poll at or after its end. The
table gives makespan / lower bound (the longest duration, as `pipeline_scale.py` computes it for a batch) for
each T: the first row, every job created at the submit, is the poll ceiling's own share; every other row is
what spreading the creates adds. Read the largest T whose worst round stays under a target, and compare it
with the create spread a real run achieves.

Usage: uv run python benchmarks/makespan_floor.py [--jobs 10000] [--durations 300:600] [--poll-max 60]
       [--spreads 0,5,10,15,20,25,30,40,60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics

from research_runner.lifecycle.common import backoff_delay
from research_runner.settings import Settings


def noticed_after(settings: Settings, duration: float) -> float:
    """Seconds from a job's create to the first poll that finds it ended."""
    elapsed, polls = 0.0, 0
    while elapsed < duration:
        elapsed += backoff_delay(settings, polls)
        polls += 1
    return elapsed


def makespan_ratio(settings: Settings, jobs: int, durations: tuple[float, float], spread: float, seed: int) -> float:
    rng = random.Random(seed)
    drawn = [rng.uniform(*durations) for _ in range(jobs)]
    last = max(spread * i / jobs + noticed_after(settings, d) for i, d in enumerate(drawn))
    return last / max(drawn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--durations", default="300:600", help="MIN:MAX emulated seconds, drawn uniformly")
    parser.add_argument("--poll-initial", type=float, default=10.0)
    parser.add_argument("--poll-multiplier", type=float, default=1.5)
    parser.add_argument("--poll-max", type=float, default=60.0)
    parser.add_argument("--poll-jitter", type=float, default=0.1)
    parser.add_argument("--spreads", default="0,5,10,15,20,25,30,40,60", help="create spreads to model, seconds")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    low, high = (float(part) for part in args.durations.split(":"))
    settings = Settings(
        poll_initial=args.poll_initial,
        poll_multiplier=args.poll_multiplier,
        poll_max=args.poll_max,
        poll_jitter=args.poll_jitter,
    )
    print(
        f"makespan / lower bound, {args.jobs} jobs of {args.durations} s, polls {args.poll_initial} s "
        f"x{args.poll_multiplier} up to {args.poll_max} s ±{args.poll_jitter:.0%}, no lateness; {args.rounds} rounds"
    )
    print(f"{'creates spread over':>20} {'best':>7} {'mean':>7} {'worst':>7}")
    for spread in (float(s) for s in args.spreads.split(",")):
        ratios = [makespan_ratio(settings, args.jobs, (low, high), spread, seed) for seed in range(args.rounds)]
        print(f"{spread:>18.0f} s {min(ratios):>7.3f} {statistics.fmean(ratios):>7.3f} {max(ratios):>7.3f}")


if __name__ == "__main__":
    main()
