"""`research doctor`: a stopped Redis is a failed check with its fix; a healthy stack passes every check."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import redis
from click.testing import CliRunner, Result
from server_support import free_port

from research_runner.cli import cli

from conftest import WorkerProcess, wait_for
from emulator_support import EmulatorHandle

CHECKS = ["settings", "broker", "database", "api key", "api", "reports", "worker", "work"]


def doctor(env: dict[str, str]) -> Result:
    return CliRunner().invoke(cli, ["doctor"], env=env)


def by_check(result: Result) -> dict[str, str]:
    """Each output line keyed by its check's name (`ok   broker: …` → {"broker": "ok   broker: …"})."""
    return {line[5:].split(":", 1)[0]: line for line in result.stdout.splitlines()}


def test_a_stopped_redis_fails_the_broker_check_with_a_fix(runner_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    # A private Redis, so stopping it leaves the shared one on 6379 alone.
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        wait_for(lambda: _pings(client), 10, "the private Redis to answer")
        env = {**runner_env, "RESEARCH_BROKER_URL": f"redis://127.0.0.1:{port}/0"}
        assert by_check(doctor(env))["broker"] == f"ok   broker: redis://127.0.0.1:{port}/0 answers"
    finally:
        server.terminate()
        server.wait(timeout=10)

    result = doctor(env)
    assert result.exit_code == 1, result.output
    lines = by_check(result)
    assert list(lines) == CHECKS[:-1]  # a fresh database has no schema yet, so no work to look at
    assert lines["broker"].startswith(f"FAIL broker: cannot reach the broker at redis://127.0.0.1:{port}/0 (")
    assert lines["broker"].endswith("; fix: start the broker (e.g. `redis-server`) or correct RESEARCH_BROKER_URL")
    assert lines["worker"].startswith("skip worker: the broker cannot be reached")
    assert lines["api"].startswith("ok") and not lines["database"].startswith("FAIL")  # a new SQLite file: warn


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_a_healthy_stack_passes_every_check(
    runner_env: dict[str, str],
    redis_url: str,
    postgres_settings_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = {**runner_env, **postgres_settings_env, "RESEARCH_BROKER_URL": redis_url}
    worker = start_worker(env, "--no-beat")
    wait_for(lambda: " ready." in worker.log(), 30, "the worker to be ready")
    result = doctor(env)
    assert result.exit_code == 0, result.output
    lines = by_check(result)
    assert list(lines) == CHECKS
    assert [line for line in lines.values() if not line.startswith("ok   ")] == []
    assert "schema at revision" in lines["database"] and "1 answered: research-" in lines["worker"]
    assert lines["api"] == f"ok   api: {runner_env['RESEARCH_GEMINI_BASE_URL']} answers and accepts the key"


def test_a_refused_key_and_a_missing_key_fail_their_checks(
    runner_env: dict[str, str], start_emulator: Callable[..., EmulatorHandle]
) -> None:
    strict = start_emulator("--api-key", "the-right-key")
    env = {**runner_env, "RESEARCH_GEMINI_BASE_URL": strict.url}
    lines = by_check(doctor(env))
    assert lines["api"].startswith(f"FAIL api: {strict.url} refused the request (HTTP 401")
    assert lines["api"].endswith("; fix: check GEMINI_API_KEY (and RESEARCH_GEMINI_BASE_URL if set)")
    lines = by_check(doctor({**env, "GEMINI_API_KEY": ""}))
    assert lines["api key"] == ("FAIL api key: not set; fix: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment")
