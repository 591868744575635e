"""Live progress in a terminal: the running jobs from the database, or one job's event stream.

`research watch`, `research run` and `research submit --wait` all draw jobs with `LiveJobs`, so progress looks
the same everywhere. On a terminal it is a table redrawn in place; piped, it is one line per change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import IO, TYPE_CHECKING

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.segment import Segment
from rich.table import Table
from rich.text import Text
from sqlmodel import col, select

from research_runner import db, display, lifecycle, store
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.status import ACTIVE_STATUSES, JobStatus, utcnow

if TYPE_CHECKING:  # the SDK is imported only where a gateway is built
    from research_runner.gateway import Gateway, StreamEvent

REFRESH_SECONDS = 1.0
WATCH_LIMIT = 200  # rows a terminal can usefully show
QUESTION_COLUMN = 40
CUT_MARK = "…"  # the last line of a view taller than the terminal
# A plan waiting for the user is shown with the running jobs: the research goes on only once it is approved.
WATCHED_STATUSES = ACTIVE_STATUSES | {JobStatus.PLAN_READY}


def jobs_table(shown: list[Job]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "STATUS", "ELAPSED", "POLLS", "QUESTION", "LATEST THOUGHT"):
        table.add_column(column, no_wrap=column not in ("QUESTION", "LATEST THOUGHT"))
    for job in shown:
        # Text, not markup: questions and thoughts may contain [brackets].
        cells = (
            job.short_id,
            job.status,
            display.elapsed(job),
            str(job.poll_count),
            display.preview(job.question, QUESTION_COLUMN),
            display.activity(job),
        )
        table.add_row(*(Text(cell) for cell in cells))
    return table


class LiveJobs:
    """A table redrawn in place on a terminal; elsewhere a line each time a job's status or thought changes.

    On a terminal the view vanishes when it ends (Ctrl-C included): what the command prints next takes its place.
    """

    def __init__(self, stream: IO[str]) -> None:
        # Not soft-wrapped: a live view must know how many lines it drew to erase them.
        self.console = Console(file=stream, highlight=False)
        self._live: Live | None = None
        self._seen: dict[str, tuple[str, str | None]] = {}

    def __enter__(self) -> LiveJobs:
        if self.console.is_terminal:
            # Redrawn by `update` only, in the caller's thread. rich's refresh thread would race a line printed
            # above the view (`run`'s notices): each erases as many lines as it last knew the view to have.
            self._live = Live(_WithCursorLine(Text("")), console=self.console, transient=True, auto_refresh=False)
            self._live.start()
        return self

    def __call__(self, job: Job) -> None:
        """One job's progress: the `jobs.Progress` callback of `run` and `submit --wait`."""
        self.update([job])

    def update(self, shown: list[Job]) -> None:
        if self._live is not None:
            self._live.update(_WithCursorLine(jobs_table(shown) if shown else Text("No running jobs.")), refresh=True)
            return
        for job in shown:
            key = (job.status, job.last_thought)
            if self._seen.get(job.id) != key and job.status in WATCHED_STATUSES:
                self.console.print(Text(display.progress_line(job)), highlight=False, soft_wrap=True)
            self._seen[job.id] = key

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The view off the screen while the user answers a prompt: redrawn under it, it would hide what they type."""
        if self._live is None:
            yield
            return
        self._stop(self._live)
        yield
        self._live.start()  # not after an exception: the command is ending, the view with it

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._live is not None:
            self._stop(self._live)

    @staticmethod
    def _stop(live: Live) -> None:
        # Emptied first: stopping draws the view once more and then ends its line, which on a view as tall as
        # the terminal scrolls the top line (the header) out of the reach of the erase.
        live.update(Text(""))
        live.stop()


class _WithCursorLine:
    """A live view and an empty line under it, where the cursor waits; cut to the terminal's height, that line
    included. The terminal echoes what is typed there, `^C` above all: after a full-width line, that echo would
    wrap onto a line the view does not know it has (or scroll the screen), and erasing the view would then leave
    its top line, the table's header, behind."""

    def __init__(self, view: RenderableType) -> None:
        self.view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.view, options, pad=False)
        room = max(options.size.height - 1, 1)  # the cursor's line
        for line in lines if len(lines) <= room else [*lines[: room - 1], [Segment(CUT_MARK)]]:
            yield from line
            yield Segment.line()
        yield Segment.line()  # the cursor's (empty) line


def running_jobs(settings: Settings) -> list[Job]:
    query = (
        select(Job)
        .where(col(Job.status).in_([str(s) for s in WATCHED_STATUSES]))
        .order_by(col(Job.created_at))
        .limit(WATCH_LIMIT)
    )
    with db.session(settings) as session:
        return list(session.exec(query))


def watch_all(settings: Settings, console: Console, interval: float = REFRESH_SECONDS, once: bool = False) -> None:
    """Show the running jobs, refreshed from the database until interrupted (or once)."""
    if once:
        shown = running_jobs(settings)
        console.print(jobs_table(shown) if shown else Text("No running jobs."))
        return
    with LiveJobs(console.file) as view, lifecycle.interruptible():
        try:
            while True:
                with lifecycle.shielded():  # Ctrl-C lands between reads and redraws, never inside one
                    view.update(running_jobs(settings))
                time.sleep(interval)  # the refresh period of the view
        except KeyboardInterrupt:
            return  # leaving the view is the normal way out (SIGTERM and SIGHUP too)


def follow(settings: Settings, ref: str, gateway_factory: Callable[[], Gateway], console: Console) -> str | None:
    """Print one job's thought summaries from its event stream as they come, then how it ended.

    Returns the job's final status, or the interaction's when no worker has recorded the end yet.
    """
    job = _await_interaction(settings, store.find(settings, ref), console)
    if job.status in ACTIVE_STATUSES and job.interaction_id:
        final = _print_stream(gateway_factory().stream(job.interaction_id), job, console)
        job = store.load(settings, job.id) or job
        if job.status in ACTIVE_STATUSES:
            console.print(
                Text(
                    f"Job {job.short_id}: the interaction ended {final or 'without a status'}; "
                    "a worker stores the outcome at its next poll"
                )
            )
            return final
    console.print(Text(display.outcome_line(job)))
    return job.status


def _await_interaction(settings: Settings, job: Job, console: Console) -> Job:
    """A queued job has no stream yet: wait until a worker has created its interaction (or it ended)."""
    if job.status in ACTIVE_STATUSES and not job.interaction_id:
        console.print(Text(f"Job {job.short_id} is {job.status}; waiting for a worker to start it…"))
    return lifecycle.await_interaction(settings, job.id)


def _print_stream(events: Iterator[StreamEvent], job: Job, console: Console) -> str | None:
    """Print thoughts and status changes in stream order; returns the interaction's final status."""
    final: str | None = None
    status: str | None = None
    for event in events:
        if event.thought:
            console.print(Text(f"[{_since(job)}] {event.thought}"), highlight=False, soft_wrap=True)
        if event.status and event.status != status:
            status = event.status
            console.print(Text(f"[{_since(job)}] status: {status}"), style="dim")
        if event.error:
            console.print(Text(f"[{_since(job)}] error: {event.error}"))
        if event.terminal:
            final = status or (JobStatus.FAILED if event.error else None)
    return final


def _since(job: Job) -> str:
    seconds = int((utcnow() - job.created_at).total_seconds())
    return f"{seconds // 60:02d}:{seconds % 60:02d}"
