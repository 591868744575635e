"""Command-line behaviour: one clear error line and exit code 2 for bad input; config files work."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from research_emulator.cli import emulator_command

COMMAND = [sys.executable, "-m", "research_emulator"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=30)


def run_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command through click's runner (no subprocess start-up cost) for the many bad-input cases."""
    result = CliRunner().invoke(emulator_command, list(args), prog_name="emulator")
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--port", str(port))
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is already in use", "--port")


@pytest.mark.parametrize(
    "flag",
    [
        "get429=0.2",
        "get:teapot=0.2",
        "nowhere:429=0.2",
        "get:429=lots",
        "get:429=1.5",
        "get:cut=0.1",
        "get:429=0.6,get:503=0.6",
    ],
)
def test_bad_fault_flag(flag: str) -> None:
    args = ["--fault", flag] if "," not in flag else [x for f in flag.split(",") for x in ("--fault", f)]
    assert_one_line_error(run_in_process("--port", "0", *args))


def test_bad_fault_flag_in_a_real_process() -> None:
    assert_one_line_error(run_cli("--fault", "get:teapot=0.2"), "unknown fault kind 'teapot'")


@pytest.mark.parametrize(
    "args",
    [
        ("--port", "http"),
        ("--duration", "5:1"),
        ("--outcome-rate", "lucky=0.1"),
        ("--outcome-rate", "failed=0.7,stuck=0.7"),
        ("--no-such-flag",),
    ],
)
def test_bad_flags(args: tuple[str, ...]) -> None:
    assert_one_line_error(run_in_process(*args))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("seed: [unclosed", "not valid YAML/JSON"),
        ("colour: blue\n", "unknown key 'colour'"),
        ("faults:\n  get:\n    '429': 2\n", "rate must be between 0 and 1"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("port: -3\n", "invalid port"),
    ],
)
def test_bad_config_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "emulator.yaml"
    path.write_text(text)
    assert_one_line_error(run_in_process("--config", str(path)), fragment)


def test_bad_config_file_in_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "emulator.yaml"
    path.write_text("faults: {get: {'429': 0.2}}\nretention: forever\n")
    assert_one_line_error(run_cli("--config", str(path)), "retention")


def test_missing_config_file(tmp_path: Path) -> None:
    assert_one_line_error(run_in_process("--config", str(tmp_path / "absent.yaml")), "cannot read config file")


def test_config_file_is_applied_and_flags_override(tmp_path: Path, start_emulator: Any) -> None:
    path = tmp_path / "emulator.json"
    path.write_text('{"seed": 3, "retry-after": 4, "faults": {"get": {"429": 0.5}}, "outcomes": "failed=0.5"}')
    emulator = start_emulator("--config", str(path), "--fault", "cancel:503=1")
    stats = emulator.stats()
    assert stats["seed"] == 7  # the fixture's --seed 7 flag overrides the file
    assert stats["faults"] == {"get": {"429": 0.5}, "cancel": {"503": 1.0}}
    assert emulator.set_faults({})["retry_after"] == 4


def test_help_works() -> None:
    result = run_in_process("--help")
    assert result.returncode == 0 and "--fault" in result.stdout
