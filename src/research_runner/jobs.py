"""The Python API behind the CLI: submit, find, list, cancel, retry, wait, run in-process."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from research_runner import db, pipeline
from research_runner.config import Settings, check_agent
from research_runner.constants import (
    ACTIVE_STATUSES,
    ATTENTION_STATUSES,
    IDEMPOTENCY_KEY_MAX_CHARS,
    MAX_QUESTION_CHARS,
    REMOTE_TERMINAL,
    JobStatus,
)
from research_runner.exceptions import InvalidInput, InvalidJobState, JobNotFound, PermanentError
from research_runner.models import Job, utcnow

if TYPE_CHECKING:
    from research_runner.gateway import Gateway
    from research_runner.snapshot import Snapshot

MIN_ID_PREFIX = 4
WAIT_TICK = 0.5
Enqueue = Callable[[str], None]
Progress = Callable[[Job], None]


def clean_question(question: str) -> str:
    text = question.strip()
    if not text:
        raise InvalidInput("the question is empty; pass the research question as text")
    if len(text) > MAX_QUESTION_CHARS:
        raise InvalidInput(f"the question is {len(text)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return text


def clean_agent(agent: str) -> str:
    try:
        return check_agent(agent)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def clean_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key.strip() or len(key) > IDEMPOTENCY_KEY_MAX_CHARS:
        raise InvalidInput(f"the idempotency key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} characters")
    return key


def create(
    settings: Settings, question: str, agent: str, retry_of: str | None = None, idempotency_key: str | None = None
) -> Job:
    """Store a queued job. Its lease keeps the dispatcher away while the first step is sent directly."""
    now = utcnow()
    job = Job(
        question=clean_question(question),
        agent=clean_agent(agent),
        retry_of=retry_of,
        created_at=now,
        next_poll_at=now,
        lease_until=now + timedelta(seconds=settings.lease_seconds),
        idempotency_key=clean_key(idempotency_key),
    )
    with db.session(settings) as session:
        session.add(job)
    return job


def by_idempotency_key(settings: Settings, key: str) -> Job | None:
    with db.session(settings) as session:
        return session.exec(select(Job).where(col(Job.idempotency_key) == key)).first()


def submit(
    settings: Settings,
    question: str,
    agent: str,
    enqueue: Enqueue,
    retry_of: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Store and enqueue a job; returns (job, True), or (the existing job, False) for a known idempotency key."""
    existing = by_idempotency_key(settings, idempotency_key) if idempotency_key else None
    if existing is not None:
        return existing, False
    try:
        job = create(settings, question, agent, retry_of, idempotency_key)
    except IntegrityError:
        # The same key was submitted concurrently and the other submit won: that job is the one.
        existing = by_idempotency_key(settings, str(idempotency_key))
        if existing is None:
            raise
        return existing, False
    try:
        enqueue(job.id)
    except BaseException:
        _forget(settings, job.id)  # nothing half-stored when the broker is down
        raise
    return job, True


def _forget(settings: Settings, job_id: str) -> None:
    with db.session(settings) as session:
        session.execute(delete(Job).where(col(Job.id) == job_id, col(Job.status) == JobStatus.QUEUED))


def find(settings: Settings, ref: str) -> Job:
    """A job by its id or a unique prefix of it (as shown by `research list`)."""
    ref = ref.strip().lower()
    if len(ref) < MIN_ID_PREFIX:
        raise InvalidInput(f"job id {ref!r} is too short; give at least {MIN_ID_PREFIX} characters")
    with db.session(settings) as session:
        matches = list(session.exec(select(Job).where(col(Job.id).startswith(ref)).limit(2)))
    if not matches:
        raise JobNotFound(f"no job with id {ref!r}; `research list` shows the jobs")
    if len(matches) > 1:
        raise InvalidInput(f"job id {ref!r} is ambiguous; give more characters")
    return matches[0]


def list_jobs(settings: Settings, status: str | None = None, limit: int = 20, batch_id: str | None = None) -> list[Job]:
    query = select(Job).order_by(col(Job.created_at).desc()).limit(limit)
    if status:
        query = query.where(col(Job.status) == status)
    if batch_id:
        query = query.where(col(Job.batch_id) == batch_id)
    with db.session(settings) as session:
        return list(session.exec(query))


def cancel(settings: Settings, ref: str, gateway_factory: Callable[[], Gateway]) -> Job:
    job = find(settings, ref)
    if job.status in ATTENTION_STATUSES and job.interaction_id:
        return _cancel_waiting(settings, job, gateway_factory())
    if job.status not in ACTIVE_STATUSES:
        raise InvalidJobState(f"job {job.short_id} has already ended ({job.status}); there is nothing to cancel")
    if job.status == JobStatus.QUEUED and pipeline.transition(
        settings,
        job.id,
        [JobStatus.QUEUED],
        status=JobStatus.CANCELLED,
        finished_at=utcnow(),
        next_poll_at=None,
        lease_until=None,
        error="cancelled by the user before it started",
    ):
        return _reload(settings, job.id)
    job = _await_interaction(settings, job.id)
    assert job.interaction_id is not None
    gateway = gateway_factory()
    try:
        snapshot = gateway.cancel(job.interaction_id)
    except PermanentError:
        # The API refuses to cancel an interaction that has ended: record how it ended instead.
        snapshot = gateway.get(job.interaction_id)
    pipeline.record(settings, job, snapshot)
    return _reload(settings, job.id)


def _cancel_waiting(settings: Settings, job: Job, gateway: Gateway) -> Job:
    """A job waiting on the user (needs_attention, requires_action) may hold a live interaction: stop it."""
    assert job.interaction_id is not None
    try:
        snapshot: Snapshot | None = gateway.cancel(job.interaction_id)
    except PermanentError:
        snapshot = _ended_as(gateway, job.interaction_id)  # the API refuses to cancel what has ended: see how
    if snapshot is None:  # the API no longer knows the interaction either: nothing is left to stop
        pipeline.transition(
            settings,
            job.id,
            [job.status],
            status=JobStatus.CANCELLED,
            finished_at=utcnow(),
            error=f"cancelled by the user; the API no longer reports on interaction {job.interaction_id}",
        )
    elif snapshot.status in REMOTE_TERMINAL and snapshot.status != JobStatus.REQUIRES_ACTION:
        pipeline.finish(settings, job, snapshot, from_statuses=[job.status])
    else:  # still waiting, or a status we do not know: the user has decided, so it ends here
        pipeline.transition(
            settings,
            job.id,
            [job.status],
            status=JobStatus.CANCELLED,
            remote_status=snapshot.status,
            finished_at=utcnow(),
            error=f"cancelled by the user while it was {job.status}"
            + (f"; before that: {job.error}" if job.error else ""),
        )
    return _reload(settings, job.id)


def _ended_as(gateway: Gateway, interaction_id: str) -> Snapshot | None:
    try:
        return gateway.get(interaction_id)
    except PermanentError:
        return None


def abandon(settings: Settings, job_id: str, reason: str) -> None:
    """Mark an unfinished job cancelled without asking the API (its interaction is gone with its server)."""
    pipeline.transition(
        settings,
        job_id,
        ACTIVE_STATUSES,
        status=JobStatus.CANCELLED,
        finished_at=utcnow(),
        next_poll_at=None,
        lease_until=None,
        error=reason,
    )


def _await_interaction(settings: Settings, job_id: str, timeout: float = 30.0) -> Job:
    """A create may be in flight; cancelling needs its interaction id, so wait briefly for it."""
    deadline = time.monotonic() + timeout
    while True:
        job = _reload(settings, job_id)
        if job.status == JobStatus.RUNNING and job.interaction_id:
            return job
        if job.status not in ACTIVE_STATUSES:
            raise InvalidJobState(f"job {job.short_id} has already ended ({job.status}); there is nothing to cancel")
        if time.monotonic() > deadline:
            raise InvalidJobState(f"job {job.short_id} is still being submitted; try again in a minute")
        time.sleep(WAIT_TICK)


def retry(settings: Settings, ref: str, enqueue: Enqueue) -> Job:
    """Start a new job for an ended one; the old job and its record stay as they are."""
    job = find(settings, ref)
    if job.status in ACTIVE_STATUSES or job.status == JobStatus.COMPLETED:
        raise InvalidJobState(
            f"job {job.short_id} is {job.status}; only jobs that ended without completing can be retried"
        )
    return submit(settings, job.question, job.agent, enqueue, retry_of=job.id)[0]


def _reload(settings: Settings, job_id: str) -> Job:
    job = pipeline.load(settings, job_id)
    if job is None:
        raise JobNotFound(f"job {job_id} disappeared")
    return job


def wait(settings: Settings, job_id: str, progress: Progress, timeout: float | None = None) -> Job:
    """Watch the database until a worker has taken the job to its end."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = _reload(settings, job_id)
        progress(job)
        if job.status not in ACTIVE_STATUSES or (deadline is not None and time.monotonic() > deadline):
            return job
        time.sleep(WAIT_TICK)


def _hold(settings: Settings, job: Job) -> None:
    """Keep a worker's dispatcher away from a job this process runs; if the process dies, the lease lapses."""
    assert job.next_poll_at is not None
    until = job.next_poll_at + timedelta(seconds=settings.lease_seconds)
    if job.lease_until is None or job.lease_until < until:
        pipeline.transition(settings, job.id, [job.status], lease_until=until)


def run_inline(settings: Settings, job_id: str, gateway: Gateway, progress: Progress) -> Job:
    """Process a job in this process, without broker or worker: the no-server path."""
    while True:
        job = _reload(settings, job_id)
        progress(job)
        if job.status not in ACTIVE_STATUSES:
            return job
        if job.next_poll_at is None or job.next_poll_at <= utcnow():
            pipeline.advance(settings, gateway, job_id)
            continue
        _hold(settings, job)
        time.sleep(min(WAIT_TICK, max(0.0, (job.next_poll_at - utcnow()).total_seconds())))
