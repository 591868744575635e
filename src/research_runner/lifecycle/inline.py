"""A job run in this process, without broker or worker: `research run` and Client.run."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from research_runner import store
from research_runner.lifecycle.steps import advance
from research_runner.lifecycle.user import WAIT_TICK, abandon, approve, reload, revise
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.status import ACTIVE_STATUSES, JobStatus, utcnow

if TYPE_CHECKING:  # the SDK is imported only where a gateway is built
    from research_runner.gateway import Gateway


Progress = Callable[[Job], None]
# Shown a job's plan: returns None to approve it, or the changes to ask for.
Review = Callable[[Job], str | None]


def _hold(settings: Settings, job: Job) -> None:
    """Keep a worker's dispatcher away from a job this process runs; if the process dies, the lease lapses."""
    assert job.next_poll_at is not None
    until = job.next_poll_at + timedelta(seconds=settings.lease_seconds)
    if job.lease_until is None or job.lease_until < until:
        store.transition(settings, job.id, [job.status], lease_until=until)


def run_inline(settings: Settings, job_id: str, gateway: Gateway, progress: Progress) -> Job:
    """Process a job in this process, without broker or worker: the no-server path."""
    while True:
        with shielded():
            job = reload(settings, job_id)
            progress(job)
        if job.status not in ACTIVE_STATUSES:
            return job
        if job.next_poll_at is None or job.next_poll_at <= utcnow():
            with shielded():
                advance(settings, gateway, job_id)
            continue
        with shielded():
            _hold(settings, job)
        time.sleep(min(WAIT_TICK, max(0.0, (job.next_poll_at - utcnow()).total_seconds())))


def run_thread(settings: Settings, job_id: str, gateway: Gateway, progress: Progress, review: Review | None) -> Job:
    """`run_inline`, and each plan the job waits on shown to `review`, until the job ends (or waits on a plan no
    one reviews)."""
    while True:
        job = run_inline(settings, job_id, gateway, progress)
        if job.status != JobStatus.PLAN_READY or review is None:
            return job
        change = review(job)
        if change is None:
            approve(settings, job.id)
        else:
            revise(settings, job.id, change)


@contextmanager
def api_settings(
    settings: Settings, emulator: bool | None, notice: Callable[[str], None]
) -> Iterator[tuple[Settings, bool]]:
    """The settings to run a job with, and whether they point at a private emulator (`emulator`, or by default
    when no API key is set), which runs in this process meanwhile."""
    if not (emulator if emulator is not None else settings.api_key is None):
        yield settings, False
        return
    from research_emulator import EmulatorSettings, run_in_thread

    with run_in_thread(EmulatorSettings(host="127.0.0.1", port=0)) as running:
        notice(f"Using a private local emulator at {running.url}: the report will be emulated.")
        yield settings.for_private_emulator(running.url), True


def interrupted(settings: Settings, job_id: str, private: bool, notice: Callable[[str], None]) -> None:
    """Say what becomes of a job whose `research run` was interrupted."""
    if private:  # the private emulator dies with this process, and its interaction with it
        abandon(settings, job_id, "interrupted; the private emulator stopped with `research run`")
        notice(f"Job {job_id[:8]} cancelled: its private emulator stopped with this command.")
        return
    notice(f"Job {job_id[:8]} goes on: a `research worker` will finish it, or `research cancel {job_id[:8]}`.")


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP while a job runs in this process: handled exactly like Ctrl-C."""


@dataclass
class _Shield:
    """Whether a step is under way that an interrupt must not cut, and the interrupt that waits for its end."""

    up: bool = False
    pending: KeyboardInterrupt | None = None


_shield = _Shield()  # signals are handled in the main thread only, so one is enough


@contextmanager
def shielded() -> Iterator[None]:
    """A step that Ctrl-C (or SIGTERM/SIGHUP) does not cut in the middle, under `interruptible`: it is raised when
    the step ends. Cut anywhere, a database session's close or a redraw of the screen would be left half done and
    the libraries doing them would print tracebacks about it. A second interrupt does not wait."""
    if _shield.up or threading.current_thread() is not threading.main_thread():  # nested, or no signal comes here
        yield
        return
    _shield.up = True
    try:
        yield
    finally:  # what is pending is raised unless the step raised something else
        _shield.up = False
        pending, _shield.pending = _shield.pending, None
    if pending is not None:
        raise pending


def _interrupt(signum: int, _frame: Any) -> None:
    interrupt = KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signal.Signals(signum).name)
    if _shield.up and _shield.pending is None:
        _shield.pending = interrupt
        return
    _shield.pending = None
    raise interrupt


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt while a job runs in this process, so that being killed
    politely leaves the job in a true state, as Ctrl-C does; all three wait for the end of a `shielded` step
    (signals can only be handled in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, _interrupt) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
