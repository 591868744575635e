"""CPU per API call through the gateway, with google-genai as shipped and with the gateway's speed-ups.

Starts the emulator as a separate process, then measures, in one child process per mode (the speed-ups are
process-wide, so the modes cannot share one), the CPU time of the calling process per call:

  sdk as shipped     no speed-up: google-genai 3.x builds a pydantic model class for every body it sends and
                     reply it reads, reads type hints and imports its own modules again on every call
  create by keywords every speed-up, but a create's body passed as keyword arguments, as before
                     sdk_speedups.create_request (the SDK then walks the request type's unions first)
  all speed-ups      install_sdk_speedups() and create_request, as every Gateway does

The modes run in turn, --rounds times, and each figure is the least of its rounds: this VM's speed varies by
±30% from one second to the next. Compare modes within one run, on a quiet machine.

Usage: uv run python benchmarks/gateway_cost.py [--calls 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_scale import start_emulator, stop  # the sibling benchmark's process helpers

AGENT = "deep-research-pro-preview-12-2025"
MODES = ("sdk as shipped", "create by keywords", "all speed-ups")


def cpu_ms_per_call(call: Callable[[int], object], calls: int) -> float:
    for n in range(10):  # warm-up: connections, imports, first-use caches
        call(n)
    started = time.process_time()
    for n in range(calls):
        call(n)
    return (time.process_time() - started) * 1000 / calls


def measure(url: str, mode: str, calls: int) -> dict[str, float]:
    """Runs in a child process: the gateway's calls, with the speed-ups of one mode."""
    from research_runner import gateway as gateway_module
    from research_runner.settings import Settings

    if mode == MODES[0]:  # Gateway() installs the speed-ups; make that a no-op to see the SDK as shipped
        setattr(gateway_module, "install_sdk_speedups", lambda: False)  # noqa: B010 (imported, not exported)
    if mode != MODES[-1]:  # None: the gateway passes the body as keyword arguments
        setattr(gateway_module, "create_request", lambda body: None)  # noqa: B010 (imported, not exported)
    os.environ["GEMINI_API_KEY"] = "bench-key"
    gateway = gateway_module.Gateway(Settings(gemini_base_url=url))
    ids = [gateway.create(f"warm-up {n}", AGENT, f"job-{n}") for n in range(calls + 10)]
    uncancelled = iter(ids)
    sdk = gateway._read_client  # the typed get, as code without the raw reply reads it
    return {
        "Gateway.create": cpu_ms_per_call(lambda n: gateway.create(f"question {n}", AGENT, f"job-{n}"), calls),
        "Gateway.get (raw reply)": cpu_ms_per_call(lambda n: gateway.get(ids[n]), calls),
        "SDK interactions.get (typed)": cpu_ms_per_call(lambda n: sdk.interactions.get(ids[n]), calls),
        "Gateway.cancel": cpu_ms_per_call(lambda n: gateway.cancel(next(uncancelled)), calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every mode, in turn; the least is kept")
    parser.add_argument("--child", nargs=2, metavar=("URL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.calls)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        emulator, url = start_emulator(1, 0.0, Path(tmp) / "emulator.log", "--duration", "3600:3600")
        try:
            results = measure_all(url, args.calls, args.rounds)
        finally:
            stop(emulator, 10)
    print_results(results, args.calls, args.rounds)


def measure_all(url: str, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    """Each mode once per round, in turn; a call's figure is its least over the rounds (this VM is noisy)."""
    results: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for mode in MODES:
            child = [sys.executable, __file__, "--calls", str(calls), "--child", url, mode]
            measured = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
            kept = results.setdefault(mode, measured)
            results[mode] = {call: min(kept[call], ms) for call, ms in measured.items()}
    return results


def print_results(results: dict[str, dict[str, float]], calls: int, rounds: int) -> None:
    where = f"emulator on 127.0.0.1, {os.cpu_count()} CPUs"
    print(f"gateway CPU per call: {calls} calls each, least of {rounds} rounds, {where}")
    print(f"{'call':30}" + "".join(f" {mode:>18}" for mode in MODES) + f" {'shipped/all':>12}")
    for call, shipped in results[MODES[0]].items():
        cells = "".join(f" {results[mode][call]:15.2f} ms" for mode in MODES)
        print(f"{call:30}{cells} {shipped / results[MODES[-1]][call]:11.1f}x")


if __name__ == "__main__":
    main()
