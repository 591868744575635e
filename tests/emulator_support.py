"""Pytest fixtures that run the Interactions API emulator as a separate process.

Imported by tests/conftest.py with `from emulator_support import *`.

- `emulator`: one emulator process per test session (`--port 0 --seed 7 --duration 0.5:2 --retention 1`),
  reset before every test; yields an `EmulatorHandle`.
- `start_emulator(*args)`: a factory for tests that need their own flags; processes stop at teardown.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, cast

import pytest
from google import genai
from google.genai import types
from google.genai._gaos.types.basemodel import UnrecognizedStr
from google.genai.interactions import Interaction
from pydantic import BaseModel

__all__ = [
    "DEFAULT_EMULATOR_ARGS",
    "EmulatorHandle",
    "emulator",
    "emulator_process",
    "launch_emulator",
    "start_emulator",
]

DEFAULT_EMULATOR_ARGS = ("--port", "0", "--seed", "7", "--duration", "0.5:2", "--retention", "1")
STARTUP_TIMEOUT = 20.0
AGENT: Final = "deep-research-preview-04-2026"
LISTENING_PREFIX = "Emulator listening on "


def poll_until(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, message: str = "condition"
) -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)  # a poll interval, not a wait for something to happen


def unknowns(obj: Any, path: str = "$") -> list[str]:
    """Every part of a parsed SDK object that the SDK did not recognise."""
    found: list[str] = []
    if isinstance(obj, BaseModel):
        name = type(obj).__name__
        if name.startswith("Unknown") or obj.__dict__.get("is_unknown") is True:
            found.append(f"{path}: {name}")
        values = {**obj.__dict__, **(obj.model_extra or {})}
        for key, value in values.items():
            found += unknowns(value, f"{path}.{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            found += unknowns(value, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            found += unknowns(value, f"{path}.{key}")
    elif isinstance(obj, UnrecognizedStr):
        found.append(f"{path}: unrecognised value {str(obj)!r}")
    return found


def step_count(interaction: Interaction) -> int:
    """len(interaction.steps); the SDK types `steps` as optional."""
    assert interaction.steps is not None
    return len(interaction.steps)


def assert_known(obj: Any) -> None:
    assert unknowns(obj) == []


def collect_stream(
    client: Any, interaction_id: str, stop_after_index: int | None = None, last_event_id: str | None = None
) -> list[Any]:
    """All events of a stream; for never-ending streams stop after the step.stop of `stop_after_index`."""
    events = []
    stream = client.interactions.get(interaction_id, stream=True, last_event_id=last_event_id)
    for event in stream:
        events.append(event)
        if stop_after_index is not None and event.event_type == "step.stop" and event.index == stop_after_index:
            break
    stream.close()
    return events


@dataclass
class EmulatorHandle:
    url: str
    process: subprocess.Popen[bytes]
    stderr_path: str = ""
    _clients: list[genai.Client] = field(default_factory=list, repr=False)

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("GET", "/_emulator/stats")
        return result

    def reset(self) -> None:
        self._admin("POST", "/_emulator/reset")

    def set_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("PUT", "/_emulator/faults", faults)
        return result

    def describe(self, interaction_id: str) -> dict[str, Any]:
        """The emulator's own view of an interaction: outcome, duration, status (admin surface)."""
        result: dict[str, Any] = self._admin("GET", f"/_emulator/interactions/{interaction_id}")
        return result

    def client(
        self, api_key: str = "test-key", attempts: int = 1, timeout_ms: int | None = 30_000, **retry_options: Any
    ) -> genai.Client:
        """A real SDK client for this emulator; attempts=1 so tests see raw faults unless they ask.

        Extra keyword arguments go to `HttpRetryOptions` (e.g. initial_delay=0.05).
        """
        options: dict[str, Any] = {"base_url": self.url, "retry_options": {"attempts": attempts, **retry_options}}
        if timeout_ms is not None:
            options["timeout"] = timeout_ms
        client = genai.Client(api_key=api_key, http_options=cast(types.HttpOptionsDict, options))
        self._clients.append(client)
        return client

    def stderr(self) -> str:
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.stderr_path:
            os.unlink(self.stderr_path)
            self.stderr_path = ""


def launch_emulator(*args: str) -> EmulatorHandle:
    """Start `python -m research_emulator` with DEFAULT_EMULATOR_ARGS + args; wait for its URL."""
    stderr = tempfile.NamedTemporaryFile(prefix="emulator-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "research_emulator", *DEFAULT_EMULATOR_ARGS, *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
    stderr.close()
    handle = EmulatorHandle(url="", process=process, stderr_path=stderr.name)
    try:
        handle.url = _read_url(process)
    except BaseException:
        output = handle.stderr()
        handle.stop()
        pytest.fail(f"emulator did not start ({' '.join(command)}):\n{output}")
    return handle


def _read_url(process: subprocess.Popen[bytes]) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (process.poll() is not None and not selector.select(0)):
                raise RuntimeError("no listening line")
            if selector.select(min(remaining, 0.5)):
                chunk = os.read(process.stdout.fileno(), 1)
                if not chunk:
                    raise RuntimeError("emulator closed stdout")
                line += chunk
    text = line.decode().strip()
    if not text.startswith(LISTENING_PREFIX):
        raise RuntimeError(f"unexpected first line {text!r}")
    return text.removeprefix(LISTENING_PREFIX)


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorHandle]:
    """The shared emulator process; most tests want the per-test `emulator` fixture instead."""
    handle = launch_emulator()
    yield handle
    handle.stop()


@pytest.fixture
def emulator(emulator_process: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """The shared emulator, reset (interactions, stats, faults, fault RNG) before each test, and after it: a test
    module that shares one worker uses `emulator_process` itself, and must not inherit a fault set here."""
    emulator_process.reset()
    yield emulator_process
    for client in emulator_process._clients:
        client.close()
    emulator_process._clients.clear()
    emulator_process.reset()


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., EmulatorHandle]]:
    """Factory: `start_emulator("--fault", "create:lost=1")` starts a dedicated emulator process."""
    handles: list[EmulatorHandle] = []

    def start(*args: str) -> EmulatorHandle:
        handle = launch_emulator(*args)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()
