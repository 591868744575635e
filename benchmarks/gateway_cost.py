"""CPU per API call through the gateway, with google-genai as shipped and with its serialiser classes reused.

Starts the emulator as a separate process, then measures, in one child process per mode (the speed-up is
process-wide, so the modes cannot share one), the CPU time of the calling process per call:

  sdk as shipped     google-genai 3.x builds a pydantic model class for every body it sends and reply it reads
  classes reused     research_runner.gateway.reuse_sdk_model_classes() installed, as every Gateway does

Usage: uv run python benchmarks/gateway_cost.py [--calls 300]
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
MODES = ("sdk as shipped", "classes reused")


def cpu_ms_per_call(call: Callable[[int], object], calls: int) -> float:
    for n in range(10):  # warm-up: connections, imports, first-use caches
        call(n)
    started = time.process_time()
    for n in range(calls):
        call(n)
    return (time.process_time() - started) * 1000 / calls


def measure(url: str, mode: str, calls: int) -> dict[str, float]:
    """Runs in a child process: the gateway's calls, with or without reused classes."""
    from research_runner import gateway as gateway_module
    from research_runner.settings import Settings

    if mode == MODES[0]:  # Gateway() installs the speed-up; make it a no-op to see the SDK as shipped
        gateway_module.reuse_sdk_model_classes = lambda: False
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
    parser.add_argument("--child", nargs=2, metavar=("URL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.calls)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        emulator, url = start_emulator(1, 0.0, Path(tmp) / "emulator.log", "--duration", "3600:3600")
        try:
            results = measure_all(url, args.calls)
        finally:
            stop(emulator, 10)
    print_results(results, args.calls)


def measure_all(url: str, calls: int) -> dict[str, dict[str, float]]:
    return {
        mode: json.loads(
            subprocess.run(
                [sys.executable, __file__, "--calls", str(calls), "--child", url, mode],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for mode in MODES
    }


def print_results(results: dict[str, dict[str, float]], calls: int) -> None:
    print(f"gateway CPU per call: {calls} calls each, emulator on 127.0.0.1, {os.cpu_count()} CPUs")
    print(f"{'call':30} {MODES[0]:>15} {MODES[1]:>15} {'ratio':>7}")
    for call, shipped in results[MODES[0]].items():
        reused = results[MODES[1]][call]
        print(f"{call:30} {shipped:12.2f} ms {reused:12.2f} ms {shipped / reused:6.1f}x")


if __name__ == "__main__":
    main()
