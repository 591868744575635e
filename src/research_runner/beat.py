"""The dispatch tick, and the Celery beat scheduler that runs it.

Every `dispatch_interval` seconds the tick fires due schedules, hands out the job steps that are due (polls
first), writes the digests of finished batches and retries report files that could not be written. Beat runs the
tick itself (DispatchScheduler) instead of sending it as a task: ticks then never pile up in the broker, never
crowd Flower's task list, and a slow tick delays only the next one.

The tick is safe to run from several beats at once: claiming a due job is one conditional UPDATE, so a second
dispatcher finds nothing left to claim; each schedule's due time is fired once the same way. Every unit of work
is isolated: one that fails is logged and recorded on its row and costs the others nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.beat import Scheduler

from research_runner import batches, broker, db, leases, outcome, schedules
from research_runner.settings import Settings
from research_runner.status import JobStatus

# Our scheduler keeps its schedule in memory: no shelve file, so several embedded beats never fight over one.
SCHEDULER = "research_runner.beat:DispatchScheduler"
DISPATCH_ENTRY = "research.dispatch"
log = logging.getLogger("research_runner.beat")
Send = Callable[[JobStatus, list[tuple[str, str]]], None]
# While steps wait in the broker, creates get this share of their budget: the polls of research already paid for
# go first, yet a burst of creates keeps moving (10,000 jobs: every create within 60 s, issue 16; a quarter left
# 6,800 polls more than 2 s late in the burst, an eighth 4,100, and the creates ended no later).
CREATES_FLOOR_SHARE = 8


@dataclass
class TickReport:
    """What one tick did; logged only when it did something."""

    dispatched: int = 0
    poll_lag: float = 0.0
    creates_cap: int = 0
    creates_budget: int = 0
    interrupted_creates: int = 0
    schedules_fired: int = 0
    digests_written: int = 0
    reports_written: int = 0
    broker_messages_deleted: int = 0
    failures: list[str] = field(default_factory=list)

    def news(self) -> bool:
        """Worth an INFO line: handing out steps is routine (each job's steps log their own lines)."""
        return any((self.interrupted_creates, self.schedules_fired, self.digests_written, self.reports_written,
                    self.failures))  # fmt: skip

    def line(self) -> str:
        done = {name: value for name, value in vars(self).items() if value and name != "failures"}
        text = "dispatch tick: " + ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in done.items())
        return text + (f"; failed: {'; '.join(self.failures)}" if self.failures else "")


class Dispatcher:
    """The ticks of one beat. Each hands out creates under a cap that moves from the last tick's."""

    def __init__(self, settings: Settings, send: Send, waiting: Callable[[], int] = lambda: 0) -> None:
        self.settings, self.send, self.waiting = settings, send, waiting
        self.creates_cap: int | None = None  # none yet: the first tick may hand out the whole budget

    def tick(self) -> TickReport:
        report = tick(self.settings, self.send, self.waiting, self.creates_cap)
        self.creates_cap = report.creates_cap
        return report


def tick(
    settings: Settings, send: Send, waiting: Callable[[], int] = lambda: 0, last_cap: int | None = None
) -> TickReport:
    """One dispatch tick. Each step is isolated, so one broken schedule or digest never stops the polls.

    `waiting` counts the jobs whose step waits in the broker, unread by any worker: with the polls' lag (how
    late the oldest poll handed out and not yet done is), the signs that the workers are busy, on which the
    creates' budget shrinks."""
    report = TickReport()
    fired = _isolated(report, "schedules", lambda: schedules.fire_each(settings))  # first: its jobs start now
    report.schedules_fired = len(fired.done) if fired else 0
    for batch in fired.done if fired else []:
        log.info("schedule fired: batch %s (%s) with %d jobs", batch.short_id, batch.name, batch.job_count)
    report.failures += [f"schedule {f.name}: {f.error}" for f in (fired.failures if fired else [])]
    report.interrupted_creates = _isolated(report, "reaper", lambda: leases.reap_interrupted_creates(settings)) or 0
    report.poll_lag = round(_isolated(report, "poll lag", lambda: leases.poll_lag(settings)) or 0.0, 2)
    waiting_jobs = _isolated(report, "broker backlog", waiting) or 0
    report.creates_cap = creates_cap(settings, report.poll_lag, last_cap)
    report.creates_budget = creates_budget(settings, waiting_jobs, report.creates_cap)
    # not isolated: without it the tick has no purpose, so let beat log it
    due = leases.claim_due(settings, creates=report.creates_budget)
    report.dispatched = len(due)
    # Polls first: they are due now and quick, while a burst of creates can take a while to drain.
    for status in (JobStatus.RUNNING, JobStatus.QUEUED):
        send(status, [(job_id, start) for job_id, s, start in due if s == status])
    digests = _isolated(report, "digests", lambda: batches.finalize_each(settings))
    report.digests_written = len(digests.done) if digests else 0
    report.failures += [f"digest of batch {f.name}: {f.error}" for f in (digests.failures if digests else [])]
    report.reports_written = _isolated(report, "reports", lambda: outcome.write_pending_reports(settings)) or 0
    report.broker_messages_deleted = _isolated(report, "broker", lambda: broker.purge_delivered(settings)) or 0
    return report


def creates_cap(settings: Settings, poll_lag: float, last: int | None = None) -> int:
    """The most creates a tick may hand out, moved from the last tick's cap: halved while a poll handed out a
    tick ago is still not done (`poll_lag` over a tick: the workers are behind, even with an empty broker, for
    a worker holds the messages it has read until it is done), else one floor higher, up to `dispatch_creates`.

    Going back to the whole budget as soon as the polls caught up sent bursts of 200-300 creates that made
    the next polls late (issue 16)."""
    ceiling = settings.dispatch_creates
    last = ceiling if last is None else last
    # A poll goes out up to `poll_head_start` before it is due, so a tick later its lag is a tick less that.
    if poll_lag > settings.dispatch_interval - leases.poll_head_start(settings):
        return max(_floor(settings), last // 2)
    return min(ceiling, last + _floor(settings))


def creates_budget(settings: Settings, waiting_jobs: int, cap: int | None = None) -> int:
    """Creates to hand out this tick: the cap less what waits in the broker, never under the floor (an eighth
    of `dispatch_creates`), so a burst of creates always moves while the polls of paid-for research go first."""
    cap = settings.dispatch_creates if cap is None else cap
    return max(_floor(settings), cap - waiting_jobs)


def _floor(settings: Settings) -> int:
    return max(settings.dispatch_creates // CREATES_FLOOR_SHARE, 1)


def _isolated(report: TickReport, what: str, step: Callable[[], Any]) -> Any:
    try:
        return step()
    except Exception as exc:
        log.exception("dispatch tick: %s failed", what)
        report.failures.append(f"{what}: {exc}")
        return None


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {DISPATCH_ENTRY: {"task": DISPATCH_ENTRY, "schedule": settings.dispatch_interval}}


class DispatchScheduler(Scheduler):  # type: ignore[misc]
    """Celery's in-memory scheduler, except that the dispatch entry runs the tick here instead of sending it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A worker's embedded beat is a forked process whose inherited descriptors Celery closes: database
        # connections made before the fork are unusable here, so this process makes its own.
        db.dispose_engines()
        super().__init__(*args, **kwargs)

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        if entry.task != DISPATCH_ENTRY:
            super().apply_entry(entry, producer)
            return
        try:
            report = self.app.research_dispatch()
        except Exception:
            log.exception("dispatch tick failed; the next tick tries again")
            return
        if report.failures:
            log.warning(report.line())
        elif report.news():
            log.info(report.line())
        elif report.dispatched:
            log.debug(report.line())


def run_beat(app: Celery, loglevel: str = "INFO") -> None:
    app.start(["beat", f"--scheduler={SCHEDULER}", f"--loglevel={loglevel}"])
