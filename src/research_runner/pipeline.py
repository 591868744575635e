"""The job state machine: create, poll with backoff, finish. Shared by the Celery tasks and `research run`.

The database is the source of truth. Every transition is a conditional UPDATE on the job's current status,
so a duplicated or late message can repeat a step but never apply one twice.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlmodel import col

from research_runner import db, ratelimit, reports
from research_runner.config import Settings
from research_runner.constants import ACTIVE_STATUSES, REMOTE_RUNNING, REMOTE_TERMINAL, JobStatus
from research_runner.exceptions import CreateOutcomeUnknown, GatewayError, PermanentError, RetryableError
from research_runner.models import Job, utcnow
from research_runner.snapshot import Snapshot

if TYPE_CHECKING:  # the SDK is imported only where a gateway is built
    from research_runner.gateway import Gateway

DISPATCH_BATCH = 500
# Enough of a question for the dispatcher to label its tasks (worker.task_label flattens and cuts it).
QUESTION_START_CHARS = 120
log = logging.getLogger(__name__)
_rng = random.Random()


def backoff_delay(settings: Settings, polls_done: int) -> float:
    """Seconds until the next poll: exponential up to the maximum, with jitter so jobs do not bunch up."""
    base = min(settings.poll_initial * settings.poll_multiplier ** min(polls_done, 64), settings.poll_max)
    return base * _rng.uniform(1 - settings.poll_jitter, 1 + settings.poll_jitter)


def transition(settings: Settings, job_id: str, from_statuses: Iterable[str], **values: Any) -> bool:
    """Apply `values` only if the job is still in one of `from_statuses`; True if it was."""
    values.setdefault("updated_at", utcnow())
    statement = (
        update(Job).where(col(Job.id) == job_id, col(Job.status).in_([str(s) for s in from_statuses])).values(**values)
    )
    with db.session(settings) as session:
        return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def _take_for_create(settings: Settings, job_id: str, lease: datetime) -> Job | None:
    """Move a queued job to submitting and return it, in one round trip; None if it was not queued."""
    statement = (
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status) == JobStatus.QUEUED)
        .values(status=JobStatus.SUBMITTING, lease_until=lease, updated_at=utcnow())
        .returning(Job)
    )
    with db.session(settings) as session:
        return session.scalars(statement).first()


def load(settings: Settings, job_id: str) -> Job | None:
    with db.session(settings) as session:
        return session.get(Job, job_id)


def load_many(settings: Settings, job_ids: Iterable[str]) -> list[Job]:
    """The jobs that exist among `job_ids`, in one query."""
    with db.session(settings) as session:
        return list(session.scalars(select(Job).where(col(Job.id).in_(list(job_ids)))))


def claim_due(settings: Settings, now: datetime | None = None) -> list[tuple[str, str, str]]:
    """Lease the jobs whose next step is due; returns (job id, status, question start) for the dispatcher.

    The question's start only labels the tasks in Flower, so the database cuts it rather than sending it all.
    """
    now = now or utcnow()
    due = and_(
        col(Job.status).in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        col(Job.next_poll_at) <= now,
        or_(col(Job.lease_until).is_(None), col(Job.lease_until) < now),
    )
    # SKIP LOCKED: two dispatchers claim disjoint rows instead of deadlocking (PostgreSQL; SQLite serialises).
    candidates = (
        select(col(Job.id))
        .where(due)
        .order_by(col(Job.next_poll_at))
        .limit(DISPATCH_BATCH)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(Job)
        .where(col(Job.id).in_(candidates.scalar_subquery()), due)
        .values(lease_until=now + timedelta(seconds=settings.lease_seconds))
        .returning(col(Job.id), col(Job.status), func.substr(col(Job.question), 1, QUESTION_START_CHARS))
    )
    with db.session(settings) as session:
        return [(row[0], row[1], row[2]) for row in session.execute(statement)]


def reap_interrupted_creates(settings: Settings, now: datetime | None = None) -> int:
    """A create whose worker died mid-request may or may not have started an interaction: ask the user."""
    now = now or utcnow()
    statement = (
        update(Job)
        .where(col(Job.status) == JobStatus.SUBMITTING, col(Job.lease_until) < now)
        .values(
            status=JobStatus.NEEDS_ATTENTION,
            lease_until=None,
            updated_at=now,
            error="the worker stopped while creating the interaction, so one may or may not exist; "
            "no second one was started. Run `research retry JOB` to start anew.",
        )
    )
    with db.session(settings) as session:
        return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def _throttle(settings: Settings, job_id: str, status: JobStatus) -> bool:
    """Hold the step back if the shared API budget is spent; True if it was held back."""
    if not settings.api_requests_per_minute:
        return False
    wait = ratelimit.acquire(settings)
    if wait > 0:
        transition(settings, job_id, [status], next_poll_at=utcnow() + timedelta(seconds=wait), lease_until=None)
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
    job = _take_for_create(settings, job_id, lease)
    if job is None:
        return
    try:
        interaction_id = gateway.create(job.question, job.agent, job.id)
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
        if not transition(
            settings,
            job_id,
            [JobStatus.SUBMITTING],
            status=JobStatus.RUNNING,
            interaction_id=interaction_id,
            submitted_at=now,
            next_poll_at=now + timedelta(seconds=backoff_delay(settings, 0)),
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
    transition(
        settings,
        job_id,
        [JobStatus.NEEDS_ATTENTION],
        interaction_id=interaction_id,
        error=f"the create finished late and started interaction {interaction_id}; polling did not start. "
        "Run `research retry JOB` only if you want a second one.",
    )


def poll(settings: Settings, gateway: Gateway, job_id: str) -> Polled | None:
    """Ask the API once about a running job and record what it says."""
    job = load(settings, job_id)
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
    found = load_many(settings, job_ids)
    pending: list[dict[str, Any]] = []  # jobs still running: rescheduled together in one round trip
    results, failures = _each(
        mapper, found, lambda job: poll_job(settings, gateway, job, pending), lambda job: str(job.id)
    )
    polled = dict(zip([job.id for job in found], results, strict=True))
    _reschedule_all(settings, pending)  # the others' schedules are written even when one job failed
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
    if job.submitted_at and now - job.submitted_at > timedelta(minutes=settings.max_research_minutes):
        _time_out(settings, gateway, job)
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
    record(settings, job, snapshot, pending)
    return Polled(snapshot.status, lateness)


def _time_out(settings: Settings, gateway: Gateway, job: Job) -> None:
    """Past the maximum research time: stop paying for it, then say so."""
    assert job.interaction_id is not None
    try:
        gateway.cancel(job.interaction_id)
    except GatewayError as exc:
        log.warning("job %s: cancelling the timed-out interaction failed: %s", job.short_id, exc)
    _end_without_report(
        settings,
        job.id,
        JobStatus.RUNNING,
        JobStatus.TIMED_OUT,
        f"no result after {settings.max_research_minutes:g} minutes (RESEARCH_MAX_RESEARCH_MINUTES); "
        "the interaction was cancelled",
    )


def advance(settings: Settings, gateway: Gateway, job_id: str) -> None:
    """Take whatever step a job needs next."""
    job = load(settings, job_id)
    if job is not None and job.status == JobStatus.QUEUED:
        start(settings, gateway, job_id)
    elif job is not None and job.status == JobStatus.RUNNING:
        poll(settings, gateway, job_id)


def record(settings: Settings, job: Job, snapshot: Snapshot, pending: list[dict[str, Any]] | None = None) -> None:
    if snapshot.status in REMOTE_TERMINAL:
        finish(settings, job, snapshot)
    elif snapshot.status in REMOTE_RUNNING:
        values = _next_poll(job, backoff_delay(settings, job.poll_count), snapshot=snapshot)
        if pending is None:
            transition(settings, job.id, [JobStatus.RUNNING], **values)
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
    """Store the outcome once: the report file first (atomically), then the row, guarded by status."""
    finished_at = utcnow()
    status = REMOTE_TERMINAL[snapshot.status]
    report = reports.render(job, snapshot, finished_at) if snapshot.text.strip() else None
    path = reports.save(report, settings.reports_dir) if report else None
    won = transition(
        settings,
        job.id,
        from_statuses,
        status=status,
        remote_status=snapshot.status,
        finished_at=finished_at,
        next_poll_at=None,
        lease_until=None,
        error=_outcome_error(status, snapshot),
        last_thought=snapshot.last_thought or job.last_thought,
        poll_count=job.poll_count + 1,
        report_title=report.title if report else None,
        report_markdown=report.markdown if report else None,
        report_path=str(path) if path else None,
        **_usage_columns(snapshot),
    )
    if not won and path is not None:
        _drop_orphan(settings, job.id, path)


def _drop_orphan(settings: Settings, job_id: str, path: Path) -> None:
    # Another finisher won the race; keep the file only if the stored row points at it.
    current = load(settings, job_id)
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
    transition(settings, job.id, [JobStatus.RUNNING], **_next_poll(job, delay, error=error))


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


_RESCHEDULED = ("poll_count", "next_poll_at", "lease_until", "error", "updated_at", "remote_status", "last_thought")
_RESCHEDULE_MANY = (
    update(Job)
    # poll_count as it was loaded: a poll of the same job that finished in the meantime (a batch can outlast
    # its lease, and the job be handed out again) has moved it on, and its newer schedule stands.
    .where(
        col(Job.id) == bindparam("job_id"),
        col(Job.status) == JobStatus.RUNNING,
        col(Job.poll_count) == bindparam("polls_before"),
    )
    .values({name: bindparam(f"new_{name}") for name in _RESCHEDULED})
)


def _reschedule_all(settings: Settings, pending: list[dict[str, Any]]) -> None:
    """Write the next poll of several still-running jobs in one statement (executemany), guarded by status."""
    if pending:
        with db.session(settings) as session:
            session.connection().execute(_RESCHEDULE_MANY, pending)


def _requeue(settings: Settings, job: Job, error: str, delay: float) -> None:
    # poll_count counts every API call for the job, so repeated refused creates back off too.
    transition(
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
    transition(
        settings,
        job_id,
        [from_status],
        status=JobStatus.NEEDS_ATTENTION,
        lease_until=None,
        next_poll_at=None,
        error=error,
    )


def _end_without_report(settings: Settings, job_id: str, from_status: JobStatus, status: JobStatus, error: str) -> None:
    transition(
        settings,
        job_id,
        [from_status],
        status=status,
        finished_at=utcnow(),
        lease_until=None,
        next_poll_at=None,
        error=error,
    )
