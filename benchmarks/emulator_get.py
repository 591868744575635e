"""GET throughput of the Interactions API emulator (target: at least 500 GET/s on a 2-core machine).

Starts `python -m research_emulator` as a separate process, creates a few thousand interactions,
then hammers it from a thread pool for a few seconds per phase:

  baseline        GET /_emulator/health (trivial static JSON, same server and middleware-free path)
  get completed   GET /v1/interactions/{id} of ended interactions (cached JSON bytes)
  get running     GET /v1/interactions/{id} of running interactions (JSON rebuilt when steps appear)
  sdk raw get     client.interactions.with_raw_response.get(id) through google-genai

Usage: uv run python benchmarks/emulator_get.py [--interactions 3000] [--seconds 4] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import random
import selectors
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx2
from google import genai

AGENT = "deep-research-preview-04-2026"
TARGET = 500.0
HEADERS = {"x-goog-api-key": "bench-key"}


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int
    server_cpu: float = 0.0  # server process CPU seconds per wall second during the phase

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    command = [sys.executable, "-m", "research_emulator", "--port", "0", "--seed", "1", "--duration", "0:0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("emulator did not start")
            if selector.select(0.5):
                line += os.read(process.stdout.fileno(), 1)
    return process, line.decode().strip().removeprefix("Emulator listening on ")


def create_interactions(url: str, count: int, running: int, threads: int) -> tuple[list[str], list[str]]:
    def create(n: int) -> str:
        # The last `running` interactions stay in progress for the whole benchmark.
        directive = " [[emulator outcome=stuck duration=3600]]" if n >= count - running else ""
        body = {"agent": AGENT, "input": f"Benchmark question {n}{directive}", "background": True}
        response = local.client.post(f"{url}/v1/interactions", json=body, headers=HEADERS)
        response.raise_for_status()
        return str(response.json()["id"])

    local = threading.local()

    def init() -> None:
        local.client = httpx2.Client(timeout=30)

    with ThreadPoolExecutor(threads, initializer=init) as pool:
        ids = list(pool.map(create, range(count)))
    return ids[: count - running], ids[count - running :]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to tell client-bound from server-bound runs."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hammer(
    name: str, make_call: Callable[[], Callable[[], None]], seconds: float, threads: int, server_pid: int
) -> Result:
    """Run the call from `threads` threads for `seconds`; each thread builds (and warms) its own client."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    ready = threading.Barrier(threads + 1)
    stop = 0.0

    def worker(slot: int) -> None:
        call = make_call()
        call()  # first call pays client set-up; not measured
        ready.wait()
        while time.monotonic() < stop:
            began = time.perf_counter()
            try:
                call()
            except Exception:
                errors[slot] += 1
                continue
            latencies[slot].append(time.perf_counter() - began)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    stop = time.monotonic() + seconds + 0.05
    cpu_before, began = cpu_seconds(server_pid), time.monotonic()
    ready.wait()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - began
    cpu = (cpu_seconds(server_pid) - cpu_before) / elapsed
    flat = [x for chunk in latencies for x in chunk]
    return Result(name, len(flat), elapsed, flat, sum(errors), cpu)


def httpx_get(url: str, paths: list[str]) -> Callable[[], Callable[[], None]]:
    def make() -> Callable[[], None]:
        client = httpx2.Client(timeout=30, headers=HEADERS)
        rng = random.Random()

        def call() -> None:
            client.get(url + rng.choice(paths)).raise_for_status()

        return call

    return make


def sdk_raw_get(url: str, ids: list[str]) -> Callable[[], Callable[[], None]]:
    def make() -> Callable[[], None]:
        client = genai.Client(api_key="bench-key", http_options={"base_url": url, "retry_options": {"attempts": 1}})
        rng = random.Random()

        def call() -> None:
            client.interactions.with_raw_response.get(rng.choice(ids)).json()

        return call

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=3000)
    parser.add_argument("--running", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    process, url = start_emulator()
    try:
        began = time.monotonic()
        done, running = create_interactions(url, args.interactions, args.running, args.threads)
        created_in = time.monotonic() - began
        # Touch every interaction once so report text is generated before the measured phases.
        began = time.monotonic()
        with httpx2.Client(timeout=30, headers=HEADERS) as client:
            for interaction_id in done + running:
                client.get(f"{url}/v1/interactions/{interaction_id}").raise_for_status()
        warm_rate = (len(done) + len(running)) / (time.monotonic() - began)
        pid, n, secs = process.pid, args.threads, args.seconds
        results = [
            hammer("baseline /_emulator/health", httpx_get(url, ["/_emulator/health"]), secs, n, pid),
            hammer("GET completed (httpx)", httpx_get(url, [f"/v1/interactions/{i}" for i in done]), secs, n, pid),
            hammer("GET running (httpx)", httpx_get(url, [f"/v1/interactions/{i}" for i in running]), secs, n, pid),
            hammer("SDK with_raw_response.get", sdk_raw_get(url, done), secs, n, pid),
        ]
    finally:
        process.terminate()
        process.wait(timeout=10)

    print(
        f"emulator GET throughput: {args.interactions} interactions ({args.running} running) created in "
        f"{created_in:.1f} s; first-touch GETs (report generation) {warm_rate:.0f}/s sequential; "
        f"{args.threads} client threads; {os.cpu_count()} CPUs"
    )
    print(
        f"{'phase':<30} {'requests':>9} {'seconds':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'server CPU':>10}"
    )
    for r in results:
        print(
            f"{r.name:<30} {r.requests:>9} {r.seconds:>8.1f} {r.rate:>8.0f} "
            f"{r.percentile(0.5):>8.2f} {r.percentile(0.99):>8.2f} {r.errors:>7} {r.server_cpu:>9.0%}"
        )
    gets = [r for r in results if r.name.startswith("GET")]
    worst = min(r.rate for r in gets)
    verdict = "PASS" if worst >= TARGET and not any(r.errors for r in results) else "FAIL"
    print(
        f"target >= {TARGET:.0f} GET/s: {verdict} (slowest GET phase {worst:.0f} req/s; "
        f"median latency overall {statistics.median(x for r in gets for x in r.latencies) * 1000:.2f} ms)"
    )


if __name__ == "__main__":
    main()
