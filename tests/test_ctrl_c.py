"""Ctrl-C on `research run` (also at its plan prompt), `watch` and `submit --wait` in a real terminal leaves a
clean screen: no line of the live table, the cursor where the shell's prompt belongs, the documented exit code.

Each command runs in a pseudo-terminal of its own, as a shell starts it; Ctrl-C is the byte a terminal sends for
it, so the kernel's line discipline both signals the command's process group and echoes `^C`, as it does for a
user. pyte, a terminal emulator, turns what the command wrote into the screen the user would see.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyte
import pytest

from research_runner import lifecycle

from conftest import create_job, settings_from

# 80 columns: the table fills the terminal's width, the case in which the echoed `^C` wraps onto a new line.
COLUMNS, ROWS = 80, 24
DEADLINE = 30.0
CTRL_C = b"\x03"  # what a terminal sends for Ctrl-C
# The child starts a session whose controlling terminal is the pty (as a shell's job), then becomes the command.
TAKE_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)
QUESTION = "What limits solid-state battery production in Europe and in Asia today?"


class Terminal:
    """A command in a pseudo-terminal, and the screen a terminal shows of what it wrote."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self._master, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.screen = pyte.HistoryScreen(COLUMNS, ROWS, history=1000)
        self._stream = pyte.ByteStream(self.screen)
        command = [sys.executable, "-c", TAKE_TERMINAL, "-m", "research_runner", *args]
        self.process = subprocess.Popen(
            command, stdin=follower, stdout=follower, stderr=follower, env=env, start_new_session=True
        )
        os.close(follower)  # only the child holds it: reading then ends (EIO) when the child has exited
        self._open = True

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def scrolled_off(self) -> list[str]:
        """The lines that scrolled off the top of the screen."""
        return ["".join(line[x].data for x in range(COLUMNS)).rstrip() for line in self.screen.history.top]

    def read_until(self, condition: Callable[[Terminal], bool], what: str) -> None:
        """Feed the screen what the command writes until `condition` holds (or the command ends)."""
        deadline = time.monotonic() + DEADLINE
        while not condition(self):
            left = deadline - time.monotonic()
            if not self._open or left <= 0:
                raise AssertionError(f"no {what} on the screen:\n" + "\n".join(self.lines()))
            if select.select([self._master], [], [], left)[0]:
                self._read()

    def _read(self) -> None:
        try:
            self._stream.feed(os.read(self._master, 65536))
        except OSError:  # EIO: the command has exited and closed the terminal
            self._open = False

    def type(self, keys: bytes) -> None:
        os.write(self._master, keys)

    def press_ctrl_c(self) -> None:
        self.type(CTRL_C)

    def exit_code(self) -> int:
        self.read_until(lambda _: not self._open, "end of output")
        return self.process.wait(timeout=DEADLINE)

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=DEADLINE)
        os.close(self._master)


@contextmanager
def in_terminal(args: list[str], env: dict[str, str]) -> Iterator[Terminal]:
    terminal = Terminal(args, env)
    try:
        yield terminal
    finally:
        terminal.close()


def command_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment: no API key (so `run` starts its private emulator), a terminal that draws."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("RESEARCH_") and key not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "COLUMNS", "LINES")
    }
    folders = {"RESEARCH_DATA_DIR": str(tmp_path / "data"), "RESEARCH_REPORTS_DIR": str(tmp_path / "reports")}
    return kept | folders | {"TERM": "xterm-256color"}


def is_header(line: str) -> bool:
    return line.split()[:2] == ["ID", "STATUS"]


def table_with(row: str) -> Callable[[Terminal], bool]:
    """The live table is drawn with a row that says `row`."""

    def drawn(terminal: Terminal) -> bool:
        lines = terminal.lines()
        return any(is_header(line) for line in lines) and any(row in line for line in lines)

    return drawn


def showing(text: str) -> Callable[[Terminal], bool]:
    return lambda terminal: any(text in line for line in terminal.lines())


def ctrl_c_on_table(terminal: Terminal, row: str) -> int:
    """Press Ctrl-C once the live table shows `row`; the command's exit code."""
    terminal.read_until(table_with(row), f"live table with a row saying {row!r}")
    assert any(len(line) == COLUMNS for line in terminal.lines()), "the table fills the terminal's width"
    terminal.press_ctrl_c()
    return terminal.exit_code()


def assert_clean(terminal: Terminal, printed: str) -> None:
    """No line of the table is left, on the screen or scrolled off it; the text printed is what remains, with the
    cursor (where the shell writes its prompt) at the start of the line under it."""
    lines, cursor = terminal.lines(), terminal.screen.cursor
    shown = [*terminal.scrolled_off(), *lines[: cursor.y]]
    assert not any(is_header(line) for line in shown), "\n".join(shown)
    assert (cursor.x, lines[cursor.y :]) == (0, [""] * (ROWS - cursor.y)), "\n".join(lines)
    assert re.fullmatch(printed, " ".join(shown)), "\n".join(shown)


def test_ctrl_c_on_run_leaves_its_notices_and_no_table(tmp_path: Path) -> None:
    args = ["run", f"{QUESTION} [[emulator duration=60]]"]
    with in_terminal(args, command_env(tmp_path)) as terminal:
        assert ctrl_c_on_table(terminal, "running") == 1  # README: the job did not complete
        assert_clean(
            terminal,
            r"Using a private local emulator at http://127\.0\.0\.1:\d+: the report will be emulated\. "
            r"Job [0-9a-f]{8} cancelled: its private emulator stopped with this command\. Aborted\.",
        )


def test_ctrl_c_on_watch_leaves_an_empty_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = command_env(tmp_path)
    settings = settings_from(env, monkeypatch)
    # Queued (no worker runs here), and more rows than the terminal has lines: the view cuts them off.
    job, *_ = [create_job(settings, f"{QUESTION} ({n})") for n in range(ROWS // 2)]
    with in_terminal(["watch"], env) as terminal:
        assert ctrl_c_on_table(terminal, job.short_id) == 0  # README: Ctrl-C is the way out of watch
        assert_clean(terminal, "")


def test_ctrl_c_on_submit_wait_leaves_only_aborted(tmp_path: Path) -> None:
    with in_terminal(["submit", "--wait", QUESTION], command_env(tmp_path)) as terminal:
        assert ctrl_c_on_table(terminal, "queued") == 1  # no worker runs here: the job stays queued for one
        assert_clean(terminal, r"Aborted\.")


def test_ctrl_c_at_the_plan_prompt_of_run_cancels_its_job(tmp_path: Path) -> None:
    prompt = "Approve this plan? Press Enter to approve, or type what to change:"
    args = ["run", "--plan", f"{QUESTION} [[emulator duration=1]]"]
    with in_terminal(args, command_env(tmp_path)) as terminal:
        terminal.read_until(showing(prompt), "plan prompt")
        terminal.type(b"shorter")
        terminal.read_until(showing(f"{prompt} shorter"), "answer as typed")  # the live table is not over it
        terminal.press_ctrl_c()
        assert terminal.exit_code() == 1
        assert_clean(
            terminal,
            rf".* research plan .*{re.escape(prompt)} shorter\^C "
            r"Job [0-9a-f]{8} cancelled: its private emulator stopped with this command\. Aborted\.",
        )


@pytest.mark.parametrize(
    ("signum", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, lifecycle.Interrupted)]
)
def test_an_interrupt_waits_for_the_end_of_a_shielded_step(signum: int, raised: type[BaseException]) -> None:
    steps = []
    with pytest.raises(raised), lifecycle.interruptible():
        with lifecycle.shielded():
            signal.raise_signal(signum)
            steps.append("the step went on")
        steps.append("the next step began")
    assert steps == ["the step went on"]


def test_a_second_interrupt_does_not_wait() -> None:
    with pytest.raises(KeyboardInterrupt), lifecycle.interruptible(), lifecycle.shielded():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        pytest.fail("the step went on after a second Ctrl-C")
