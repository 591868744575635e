"""The job state machine: create, poll with backoff, finish, time out, cancel, abandon.

Shared by the Celery tasks, `research run` and the Client. The database is the source of truth and every
write goes through `store.transition`, guarded by the job's current status.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from research_runner import ratelimit, reports, store, webhooks
from research_runner.constants import JOB_LABEL
from research_runner.exceptions import (
    CreateOutcomeUnknown,
    InvalidJobState,
    JobNotFound,
    PermanentError,
    RetryableError,
)
from research_runner.models import (
    ACTIVE_STATUSES,
    ATTENTION_STATUSES,
    REMOTE_RUNNING,
    REMOTE_TERMINAL,
    Job,
    JobStatus,
    utcnow,
)
from research_runner.settings import Settings
from research_runner.snapshot import Snapshot

if TYPE_CHECKING:  # the SDK is imported only where a gateway is built
    from research_runner.gateway import Gateway

log = logging.getLogger(__name__)
Progress = Callable[[Job], None]
_rng = random.Random()
WAIT_TICK = 0.5


def backoff_delay(settings: Settings, polls_done: int) -> float:
    """Seconds until the next poll: exponential up to the maximum, with jitter so jobs do not bunch up."""
    base = min(settings.poll_initial * settings.poll_multiplier ** min(polls_done, 64), settings.poll_max)
    return base * _rng.uniform(1 - settings.poll_jitter, 1 + settings.poll_jitter)


def _throttle(settings: Settings, job_id: str, status: JobStatus) -> bool:
    """Hold the step back if the shared API budget is spent; True if it was held back."""
    if not settings.api_requests_per_minute:
        return False
    wait = ratelimit.acquire(settings)
    if wait > 0:
        store.transition(settings, job_id, [status], next_poll_at=utcnow() + timedelta(seconds=wait), lease_until=None)
    return wait > 0


def _honour_retry_after(settings: Settings, exc: RetryableError) -> None:
    if settings.api_requests_per_minute and exc.retry_after:
        ratelimit.block(settings, exc.retry_after)  # every worker waits, not just this job


def start(settings: Settings, gateway: Gateway, job_id: str) -> None:
    """Create the interaction for a queued job, at most once."""
    if _throttle(settings, job_id, JobStatus.QUEUED):
        return
    now = utcnow()
    # Long enough for the create's connect and read timeouts, so the reaper never takes a create still running.
    lease = now + timedelta(seconds=settings.lease_seconds + 2 * settings.request_timeout)
    job = store.take_for_create(settings, job_id, lease)
    if job is None:
        return
    try:
        interaction_id = gateway.create(
            job.next_input or job.question, job.agent, job.id,
            agent_config=json.loads(job.agent_config) if job.agent_config else None,
            previous_interaction_id=job.previous_interaction_id,
            webhook_config=webhooks.webhook_config(settings, job.id),
        )  # fmt: skip
    except RetryableError as exc:
        _honour_retry_after(settings, exc)
        delay = max(exc.retry_after or 0.0, backoff_delay(settings, job.poll_count))
        _requeue(settings, job, f"create not accepted yet, will try again: {exc}", delay)
    except CreateOutcomeUnknown as exc:
        _needs_attention(
            settings,
            job_id,
            JobStatus.SUBMITTING,
            f"the create request may have started an interaction ({exc}); no second one was started "
            "automatically. Run `research retry JOB` to start anew.",
        )
    except PermanentError as exc:
        _end_without_report(settings, job_id, JobStatus.SUBMITTING, JobStatus.FAILED, f"create refused: {exc}")
    else:
        now = utcnow()
        if not store.transition(
            settings,
            job_id,
            [JobStatus.SUBMITTING],
            status=JobStatus.RUNNING,
            interaction_id=interaction_id,
            api_endpoint=gateway.endpoint,
            submitted_at=now,
            next_poll_at=now + timedelta(seconds=webhooks.running_poll_delay(settings, 0, backoff_delay)),
            lease_until=None,
            error=None,
        ):
            _keep_late_interaction(settings, job_id, interaction_id)


@dataclass(frozen=True)
class Polled:
    """One poll's outcome, for logs and benchmarks: what the API said, and how late the poll ran."""

    remote_status: str | None  # None when the API could not be asked
    lateness: float


def _keep_late_interaction(settings: Settings, job_id: str, interaction_id: str) -> None:
    """The job was given up on while its create was still running: record the interaction it did start."""
    log.error("job %s: create returned interaction %s after the job was given up on", job_id[:8], interaction_id)
    store.transition(
        settings,
        job_id,
        [JobStatus.NEEDS_ATTENTION],
        interaction_id=interaction_id,
        error=f"the create finished late and started interaction {interaction_id}; polling did not start. "
        "Run `research retry JOB` only if you want a second one.",
    )


def poll(settings: Settings, gateway: Gateway, job_id: str) -> Polled | None:
    """Ask the API once about a running job and record what it says."""
    job = store.load(settings, job_id)
    return None if job is None else poll_job(settings, gateway, job)


# Runs a step over several jobs, e.g. a thread pool's map, so their API calls overlap.
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


def _each(
    mapper: Mapper, items: list[Any], step: Callable[[Any], Any], job_id_of: Callable[[Any], str]
) -> tuple[list[Any], list[Exception]]:
    """Run `step` on every item; a failure is logged, returned (its result is None) and costs the others nothing."""
    failures: list[Exception] = []

    def one(item: Any) -> Any:
        try:
            return step(item)
        except Exception as exc:
            log.exception("job %s: step failed", job_id_of(item)[:8])
            failures.append(exc)
            return None

    return list(mapper(one, items)), failures


def start_many(settings: Settings, gateway: Gateway, job_ids: list[str], mapper: Mapper = map) -> None:
    """Create the interactions of several queued jobs; a failure is raised once every job has had its turn."""
    _, failures = _each(mapper, job_ids, lambda job_id: start(settings, gateway, job_id), str)
    if failures:
        raise failures[0]  # the failed jobs keep their lease and are handed out again once it lapses


def poll_many(
    settings: Settings, gateway: Gateway, job_ids: list[str], mapper: Mapper = map
) -> dict[str, Polled | None]:
    """Poll several jobs: one query loads them, then each is asked and recorded on its own (None: not polled)."""
    found = store.load_many(settings, job_ids)
    pending: list[dict[str, Any]] = []  # jobs still running: rescheduled together in one round trip
    results, failures = _each(
        mapper, found, lambda job: poll_job(settings, gateway, job, pending), lambda job: str(job.id)
    )
    polled = dict(zip([job.id for job in found], results, strict=True))
    store.reschedule_all(settings, pending)  # the others' schedules are written even when one job failed
    if failures:
        raise failures[0]  # the failed jobs keep their lease and are polled again once it lapses
    return {job_id: polled.get(job_id) for job_id in job_ids}


def poll_job(
    settings: Settings, gateway: Gateway, job: Job, pending: list[dict[str, Any]] | None = None
) -> Polled | None:
    """Poll one job loaded a moment ago; its status is checked again by every write.

    A job still running is rescheduled at once, or, given `pending`, added to it for `_reschedule_all`.
    """
    if job.status != JobStatus.RUNNING or not job.interaction_id:
        return None
    now = utcnow()
    lateness = (now - job.next_poll_at).total_seconds() if job.next_poll_at else 0.0
    if not _same_endpoint(settings, job, gateway):
        return Polled(None, lateness)
    if _throttle(settings, job.id, JobStatus.RUNNING):
        return Polled(None, lateness)
    try:
        snapshot = gateway.get(job.interaction_id)
    except RetryableError as exc:
        _honour_retry_after(settings, exc)
        delay = max(exc.retry_after or 0.0, backoff_delay(settings, job.poll_count))
        _reschedule(settings, job, delay, error=f"temporary API problem, will poll again: {exc}")
        return Polled(None, lateness)
    except PermanentError as exc:
        _needs_attention(settings, job.id, JobStatus.RUNNING, f"the API refused to report on the interaction: {exc}")
        return Polled(None, lateness)
    # The time limit applies only to an interaction still running: one that has ended is recorded as it ended.
    if snapshot.status in REMOTE_RUNNING and _past_time_limit(settings, job, now):
        _time_out(settings, gateway, job)
        return Polled(snapshot.status, lateness)
    record(settings, job, snapshot, pending)
    return Polled(snapshot.status, lateness)


def _past_time_limit(settings: Settings, job: Job, now: datetime) -> bool:
    return job.submitted_at is not None and now - job.submitted_at > timedelta(minutes=settings.max_research_minutes)


def _same_endpoint(settings: Settings, job: Job, gateway: Gateway) -> bool:
    """A job is polled only through the API endpoint that created its interaction (ids are per endpoint)."""
    if job.api_endpoint is None or job.api_endpoint == gateway.endpoint:
        return True
    _needs_attention(
        settings, job.id, JobStatus(job.status),
        f"its interaction lives at {job.api_endpoint}, but this runner talks to {gateway.endpoint}; "
        "it was not polled there. Point RESEARCH_GEMINI_BASE_URL at it, or `research cancel` it",
    )  # fmt: skip
    return False


def _time_out(settings: Settings, gateway: Gateway, job: Job) -> None:
    """Past the maximum research time and still running: stop paying for it, and say only what happened."""
    assert job.interaction_id is not None
    try:
        snapshot = gateway.cancel(job.interaction_id)
    except RetryableError as exc:  # not cancelled: keep it running and try again at the next poll
        _reschedule(settings, job, backoff_delay(settings, job.poll_count),
                    error=f"past the maximum research time; cancelling failed, will try again: {exc}")  # fmt: skip
        return
    except PermanentError:  # the API refuses to cancel what has just ended: record how it ended
        snapshot = gateway.get(job.interaction_id)
    if snapshot.status in REMOTE_TERMINAL and snapshot.status != "cancelled":
        record(settings, job, snapshot)
        return
    _end_without_report(
        settings, job.id, JobStatus.RUNNING, JobStatus.TIMED_OUT,
        f"no result after {settings.max_research_minutes:g} minutes (RESEARCH_MAX_RESEARCH_MINUTES); "
        + ("the interaction was cancelled" if snapshot.status == "cancelled" else
           f"cancel requested (the API reports {snapshot.status})"),
    )  # fmt: skip


def advance(settings: Settings, gateway: Gateway, job_id: str) -> None:
    """Take whatever step a job needs next."""
    job = store.load(settings, job_id)
    if job is not None and job.status == JobStatus.QUEUED:
        start(settings, gateway, job_id)
    elif job is not None and job.status == JobStatus.RUNNING:
        poll(settings, gateway, job_id)


def record(settings: Settings, job: Job, snapshot: Snapshot, pending: list[dict[str, Any]] | None = None) -> None:
    owner = snapshot.labels.get(JOB_LABEL)
    if owner is not None and owner != job.id:
        # Another job's interaction (e.g. ids reused by another endpoint): its report must never be stored here.
        _needs_attention(
            settings, job.id, JobStatus(job.status),
            f"interaction {snapshot.id} belongs to job {owner[:8]} (its {JOB_LABEL} label), not to this job; "
            "nothing of it was stored",
        )  # fmt: skip
        return
    if snapshot.status in REMOTE_TERMINAL:
        finish(settings, job, snapshot)
    elif snapshot.status in REMOTE_RUNNING:
        delay = webhooks.running_poll_delay(settings, job.poll_count, backoff_delay)
        values = _next_poll(job, delay, snapshot=snapshot)
        if pending is None:
            store.transition(settings, job.id, [JobStatus.RUNNING], **values)
        else:
            pending.append(
                {f"new_{key}": value for key, value in values.items()}
                | {"job_id": job.id, "polls_before": job.poll_count}
            )
    else:
        _needs_attention(
            settings,
            job.id,
            JobStatus.RUNNING,
            f"the API reported status {snapshot.status!r}, which this version does not know; polling stopped",
        )


def finish(settings: Settings, job: Job, snapshot: Snapshot, from_statuses: Iterable[str] = ACTIVE_STATUSES) -> None:
    """Store the outcome once: the report file first (atomically), then the row, guarded by status.

    A report that cannot be written (folder read-only or full) never costs the outcome: the row records it with
    the report and the reason, polling stops, and the dispatch tick writes the file once it can.
    """
    finished_at = utcnow()
    status = REMOTE_TERMINAL[snapshot.status]
    report = reports.render(job, snapshot, finished_at) if snapshot.text.strip() else None
    path, unwritten = _save(settings, job, report)
    won = store.transition(
        settings, job.id, from_statuses, status=status, remote_status=snapshot.status,
        finished_at=finished_at, next_poll_at=None, lease_until=None, error=_outcome_error(status, snapshot),
        last_thought=snapshot.last_thought or job.last_thought, poll_count=job.poll_count + 1,
        report_title=report.title if report else None, report_markdown=report.markdown if report else None,
        report_path=str(path) if path else None, report_error=unwritten, **_usage_columns(snapshot),
    )  # fmt: skip
    if not won and path is not None:
        _drop_orphan(settings, job.id, path)


def _save(settings: Settings, job: Job, report: reports.Report | None) -> tuple[Path | None, str | None]:
    if report is None:
        return None, None
    try:
        return reports.save(report, settings.reports_dir), None
    except OSError as exc:
        log.error("job %s: report not written: %s", job.id[:8], exc)
        return None, _unwritten(settings, exc)


def _unwritten(settings: Settings, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"report not written: {reason} in {settings.reports_dir}; kept in the database, written once it can be"


def write_pending_reports(settings: Settings) -> int:
    """Write the report files that could not be written when their jobs finished; returns how many were."""
    written = 0
    for job in store.unwritten_reports(settings):
        assert job.report_markdown is not None
        path = settings.reports_dir / reports.report_filename(job)
        try:
            reports.write_atomically(path, job.report_markdown)
        except OSError as exc:
            if _unwritten(settings, exc) != job.report_error:
                store.transition(settings, job.id, [job.status], report_error=_unwritten(settings, exc))
            continue
        written += store.transition(settings, job.id, [job.status], report_path=str(path), report_error=None)
    return written


def _drop_orphan(settings: Settings, job_id: str, path: Path) -> None:
    # Another finisher won the race; keep the file only if the stored row points at it.
    current = store.load(settings, job_id)
    if current is not None and current.report_path == str(path) and current.report_markdown:
        reports.write_atomically(path, current.report_markdown)  # our write may have replaced the winner's
    else:
        path.unlink(missing_ok=True)


def _outcome_error(status: JobStatus, snapshot: Snapshot) -> str | None:
    if status == JobStatus.COMPLETED:
        return None
    if status == JobStatus.REQUIRES_ACTION:
        return "the agent is waiting for input from you (requires_action)"
    return "; ".join(snapshot.errors) or f"the interaction ended {status.value}"


def _usage_columns(snapshot: Snapshot) -> dict[str, int | None]:
    usage = snapshot.usage
    return {
        "input_tokens": usage.get("total_input_tokens"),
        "output_tokens": usage.get("total_output_tokens"),
        "thought_tokens": usage.get("total_thought_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }


def _reschedule(settings: Settings, job: Job, delay: float, *, error: str) -> None:
    store.transition(settings, job.id, [JobStatus.RUNNING], **_next_poll(job, delay, error=error))


def _next_poll(job: Job, delay: float, *, snapshot: Snapshot | None = None, error: str | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "poll_count": job.poll_count + 1,
        "next_poll_at": utcnow() + timedelta(seconds=delay),
        "lease_until": None,
        "error": error,
        "updated_at": utcnow(),
    }
    if snapshot is not None:
        values["remote_status"] = snapshot.status
        values["last_thought"] = snapshot.last_thought or job.last_thought
    return values


def _requeue(settings: Settings, job: Job, error: str, delay: float) -> None:
    # poll_count counts every API call for the job, so repeated refused creates back off too.
    store.transition(
        settings,
        job.id,
        [JobStatus.SUBMITTING],
        status=JobStatus.QUEUED,
        lease_until=None,
        error=error,
        next_poll_at=utcnow() + timedelta(seconds=delay),
        poll_count=job.poll_count + 1,
    )


def _needs_attention(settings: Settings, job_id: str, from_status: JobStatus, error: str) -> None:
    store.transition(
        settings,
        job_id,
        [from_status],
        status=JobStatus.NEEDS_ATTENTION,
        lease_until=None,
        next_poll_at=None,
        error=error,
    )


def _end_without_report(settings: Settings, job_id: str, from_status: JobStatus, status: JobStatus, error: str) -> None:
    store.transition(
        settings,
        job_id,
        [from_status],
        status=status,
        finished_at=utcnow(),
        lease_until=None,
        next_poll_at=None,
        error=error,
    )


def cancel(settings: Settings, ref: str, gateway_factory: Callable[[], Gateway]) -> Job:
    job = store.find(settings, ref)
    if job.status in ATTENTION_STATUSES and job.interaction_id:
        return _cancel_waiting(settings, job, gateway_factory())
    if job.status not in ACTIVE_STATUSES:
        raise InvalidJobState(f"job {job.short_id} has already ended ({job.status}); there is nothing to cancel")
    if job.status == JobStatus.QUEUED and store.transition(
        settings,
        job.id,
        [JobStatus.QUEUED],
        status=JobStatus.CANCELLED,
        finished_at=utcnow(),
        next_poll_at=None,
        lease_until=None,
        error="cancelled by the user before it started",
    ):
        return reload(settings, job.id)
    job = await_interaction(settings, job.id, timeout=30.0)  # a create may be in flight
    if job.status not in ACTIVE_STATUSES:
        raise InvalidJobState(f"job {job.short_id} has already ended ({job.status}); there is nothing to cancel")
    if job.interaction_id is None:
        raise InvalidJobState(f"job {job.short_id} is still being submitted; try again in a minute")
    gateway = gateway_factory()
    if job.api_endpoint not in (None, gateway.endpoint):
        return _cancel_elsewhere(settings, job, gateway)
    try:
        snapshot = gateway.cancel(job.interaction_id)
    except PermanentError:
        # The API refuses to cancel an interaction that has ended: record how it ended instead.
        snapshot = gateway.get(job.interaction_id)
    record(settings, job, snapshot)
    job = reload(settings, job.id)
    if job.status in ACTIVE_STATUSES:  # never report a refused cancel as a cancel
        raise InvalidJobState(f"the API did not cancel job {job.short_id}: it reports {snapshot.status}; try again")
    return job


def _cancel_elsewhere(settings: Settings, job: Job, gateway: Gateway) -> Job:
    """The interaction lives at another endpoint (e.g. a private emulator that is gone): never ask this one
    about it, since the same id there is another interaction. The job ends here, and says so."""
    store.transition(
        settings, job.id, [job.status], status=JobStatus.CANCELLED, finished_at=utcnow(), next_poll_at=None,
        lease_until=None, error=f"cancelled by the user; its interaction at {job.api_endpoint} was not contacted "
        f"(this runner talks to {gateway.endpoint})",
    )  # fmt: skip
    return reload(settings, job.id)


def _cancel_waiting(settings: Settings, job: Job, gateway: Gateway) -> Job:
    """A job waiting on the user (needs_attention, requires_action) may hold a live interaction: stop it."""
    assert job.interaction_id is not None
    if job.api_endpoint not in (None, gateway.endpoint):
        return _cancel_elsewhere(settings, job, gateway)
    try:
        snapshot: Snapshot | None = gateway.cancel(job.interaction_id)
    except PermanentError:
        snapshot = _ended_as(gateway, job.interaction_id)  # the API refuses to cancel what has ended: see how
    if snapshot is None:  # the API no longer knows the interaction either: nothing is left to stop
        store.transition(
            settings,
            job.id,
            [job.status],
            status=JobStatus.CANCELLED,
            finished_at=utcnow(),
            error=f"cancelled by the user; the API no longer reports on interaction {job.interaction_id}",
        )
    elif snapshot.status in REMOTE_TERMINAL and snapshot.status != JobStatus.REQUIRES_ACTION:
        finish(settings, job, snapshot, from_statuses=[job.status])
    else:  # still waiting, or a status we do not know: the user has decided, so it ends here
        store.transition(
            settings,
            job.id,
            [job.status],
            status=JobStatus.CANCELLED,
            remote_status=snapshot.status,
            finished_at=utcnow(),
            error=f"cancelled by the user while it was {job.status}"
            + (f"; before that: {job.error}" if job.error else ""),
        )
    return reload(settings, job.id)


def _ended_as(gateway: Gateway, interaction_id: str) -> Snapshot | None:
    try:
        return gateway.get(interaction_id)
    except PermanentError:
        return None


def abandon(settings: Settings, job_id: str, reason: str) -> None:
    """Mark an unfinished job cancelled without asking the API (its interaction is gone with its server)."""
    store.transition(
        settings,
        job_id,
        ACTIVE_STATUSES,
        status=JobStatus.CANCELLED,
        finished_at=utcnow(),
        next_poll_at=None,
        lease_until=None,
        error=reason,
    )


def await_interaction(settings: Settings, job_id: str, timeout: float | None = None) -> Job:
    """The job once a worker has created its interaction, or has ended it, or `timeout` seconds have passed.

    The database is polled: there is nothing to subscribe to.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = reload(settings, job_id)
        if job.interaction_id or job.status not in ACTIVE_STATUSES:
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(WAIT_TICK)


def reload(settings: Settings, job_id: str) -> Job:
    job = store.load(settings, job_id)
    if job is None:
        raise JobNotFound(f"job {job_id} disappeared")
    return job


def _hold(settings: Settings, job: Job) -> None:
    """Keep a worker's dispatcher away from a job this process runs; if the process dies, the lease lapses."""
    assert job.next_poll_at is not None
    until = job.next_poll_at + timedelta(seconds=settings.lease_seconds)
    if job.lease_until is None or job.lease_until < until:
        store.transition(settings, job.id, [job.status], lease_until=until)


def run_inline(settings: Settings, job_id: str, gateway: Gateway, progress: Progress) -> Job:
    """Process a job in this process, without broker or worker: the no-server path."""
    while True:
        job = reload(settings, job_id)
        progress(job)
        if job.status not in ACTIVE_STATUSES:
            return job
        if job.next_poll_at is None or job.next_poll_at <= utcnow():
            advance(settings, gateway, job_id)
            continue
        _hold(settings, job)
        time.sleep(min(WAIT_TICK, max(0.0, (job.next_poll_at - utcnow()).total_seconds())))


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP while a job runs in this process: handled exactly like Ctrl-C."""


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt while a job runs in this process, so that being killed
    politely leaves the job in a true state, as Ctrl-C does (signals can only be handled in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    wanted = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, interrupt) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
