"""Who may step a job, and when: the dispatcher's claims and the worker's conditional takes and writes.

A job is handed out by a lease (`lease_until`): the dispatcher claims due jobs, a create takes a queued job, a
poll writes the next one. Each is one conditional UPDATE on the job's status (and lease, or poll count), so two
dispatchers, a duplicated message or a late one can repeat a step but never apply one twice. The rest of the
job table's SQL is in store.py.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, insert, literal, or_, select, update
from sqlmodel import Session, col

from research_runner import db
from research_runner.models import Job, JobTurn
from research_runner.settings import Settings
from research_runner.status import JobStatus, utcnow

# Polls handed out per dispatch tick at most. Above what one worker can poll in a tick (~700/s here): a lower cap
# was itself the limit after a burst (500 made polls late for a minute once 10,000 creates were done, issue 16).
DISPATCH_BATCH = 2000

# Enough of a question for the dispatcher to label its tasks (worker.task_label flattens and cuts it).
QUESTION_START_CHARS = 120


def mark_running(settings: Settings, values: dict[str, dict[str, Any]], turns: Sequence[JobTurn]) -> set[str]:
    """Move jobs still submitting to running (each with its `values`) and store the turns of their threads, in
    one transaction of two statements; a turn is stored either way (it records an interaction that exists).
    Returns the ids moved. Every job's row must have the same columns.
    """
    if not values:
        return set()
    ids = list(values)
    statement = (
        update(Job)
        .where(col(Job.id).in_(ids), col(Job.status) == JobStatus.SUBMITTING)
        .values({name: _per_job(name, {job_id: values[job_id][name] for job_id in ids}) for name in values[ids[0]]})
        .values(updated_at=utcnow())
        .returning(col(Job.id))
    )
    with db.session(settings) as session:
        moved = set(db.execute_plain(session, statement).scalars())
        if turns:
            db.execute_plain(session, insert(JobTurn), [turn.model_dump(exclude={"id"}) for turn in turns])
    return moved


def _per_job(name: str, by_job: dict[str, Any]) -> Any:
    """A column's new value in an UPDATE of several jobs: the one value they share, or each job's own (CASE on the
    id), so that several jobs cost one round trip instead of one each. Typed as the column, so that a NULL or a
    datetime is bound as the column's type."""
    values = list(by_job.values())
    if all(value == values[0] for value in values):
        return values[0]
    column_type = Job.__table__.c[name].type  # type: ignore[attr-defined]
    return case({job_id: literal(value, column_type) for job_id, value in by_job.items()}, value=col(Job.id))


def take_many_for_create(settings: Settings, job_ids: list[str], lease: datetime) -> list[Job]:
    """`take_for_create` for several jobs in one statement: those still queued, now submitting."""
    if not job_ids:
        return []
    statement = (
        update(Job)
        .where(col(Job.id).in_(job_ids), col(Job.status) == JobStatus.QUEUED)
        .values(status=JobStatus.SUBMITTING, lease_until=lease, updated_at=utcnow())
        .returning(Job)
    )
    with db.session(settings) as session:
        return list(session.scalars(statement))


def take_for_create(settings: Settings, job_id: str, lease: datetime) -> Job | None:
    """Move a queued job to submitting and return it, in one round trip; None if it was not queued."""
    statement = (
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status) == JobStatus.QUEUED)
        .values(status=JobStatus.SUBMITTING, lease_until=lease, updated_at=utcnow())
        .returning(Job)
    )
    with db.session(settings) as session:
        return session.scalars(statement).first()


def claim_due(
    settings: Settings, now: datetime | None = None, creates: int | None = None
) -> list[tuple[str, str, str]]:
    """Lease the jobs whose next step is due; returns (job id, status, question start) for the dispatcher.

    Polls (up to DISPATCH_BATCH) and creates (up to `creates`, by default `dispatch_creates`) are claimed apart,
    in one transaction: a burst of queued jobs, all due before any poll, would otherwise fill every tick and make
    the polls late.
    The question's start only labels the tasks in Flower, so the database cuts it rather than sending it all.
    """
    now = now or utcnow()
    lease = now + timedelta(seconds=settings.lease_seconds)
    creates_limit = settings.dispatch_creates if creates is None else creates
    polls_until = now + timedelta(seconds=poll_head_start(settings))
    claims = ((JobStatus.RUNNING, DISPATCH_BATCH, polls_until), (JobStatus.QUEUED, creates_limit, now))
    with db.session(settings) as session:
        return [
            (row[0], row[1], row[2])
            for status, limit, due_by in claims
            for row in db.execute_plain(session, _claim(status, limit, due_by, now, lease))
        ]


def poll_head_start(settings: Settings) -> float:
    """How early a poll may be handed out: half a tick. A tick hands out what falls due before the next one,
    rounded to the nearer tick, so a poll runs within half a tick of its time instead of up to a whole tick
    after it: half a tick less lateness and notice time on average (issue 16), well inside the schedule's jitter.
    A Retry-After is kept anyway (`not_before`)."""
    return settings.dispatch_interval / 2


def not_before(settings: Settings, retry_after: float | None) -> float:
    """Seconds to wait so that a poll handed out early still waits out the API's Retry-After (or the shared
    budget's wait). It counts on the dispatcher's tick being the worker's: give every process the same
    RESEARCH_DISPATCH_INTERVAL."""
    return retry_after + poll_head_start(settings) if retry_after else 0.0


def poll_lag(settings: Settings, now: datetime | None = None) -> float:
    """Seconds since the oldest poll handed out and not yet done came due (0 if there is none): how far behind
    the workers are, whichever of them holds it and whether it waits in the broker or in a worker."""
    now = now or utcnow()
    running_late = (col(Job.status) == JobStatus.RUNNING, col(Job.next_poll_at) <= now, col(Job.lease_until) > now)
    with db.session(settings) as session:
        oldest = session.scalar(select(func.min(col(Job.next_poll_at))).where(*running_late))
    return 0.0 if oldest is None else max((now - oldest).total_seconds(), 0.0)


def _claim(status: JobStatus, limit: int, due_by: datetime, now: datetime, lease: datetime) -> Any:
    due = and_(
        col(Job.status) == status,
        col(Job.next_poll_at) <= due_by,
        or_(col(Job.lease_until).is_(None), col(Job.lease_until) < now),
    )
    # SKIP LOCKED: two dispatchers claim disjoint rows instead of deadlocking (PostgreSQL; SQLite serialises).
    # MATERIALIZED: PostgreSQL may run a LIMIT subquery of `IN (...)` more than once per UPDATE, each run
    # finding other rows, which claimed more than `limit` (seen with a limit of 3 and 5 due rows).
    candidates = (
        select(col(Job.id))
        .where(due)
        .order_by(col(Job.next_poll_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte(f"due_{status}")
        .prefix_with("MATERIALIZED")
    )
    return (
        update(Job)
        .where(col(Job.id).in_(select(candidates.c.id)), due)
        .values(lease_until=lease)
        .returning(col(Job.id), col(Job.status), func.substr(col(Job.question), 1, QUESTION_START_CHARS))
    )


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
        return int(db.execute_plain(session, statement).rowcount)


def reschedule_all(settings: Settings, pending: list[dict[str, Any]]) -> None:
    """Write the next poll of several still-running jobs in one round trip, guarded by status and by each job's
    poll_count as it was loaded: a poll of the same job that finished in the meantime (a message can outlast its
    lease, and the job be handed out again) has moved it on, and its newer schedule stands.

    Each entry holds `job_id`, `polls_before` and the new values; every entry must have the same columns. One
    statement, built once per set of columns, runs for every entry (executemany, pipelined by psycopg): an
    UPDATE with a CASE per column, built anew for each message, took 12% of a worker's CPU (issue 16)."""
    if not pending:
        return
    columns = tuple(name for name in pending[0] if name not in ("job_id", "polls_before"))
    rows = [{f"{_BOUND}{name}": value for name, value in row.items()} for row in pending]
    with db.session(settings) as session:
        db.execute_plain(session, _reschedule_statement(columns), rows)


_BOUND = "new_"  # the prefix of a bound parameter's name: a column's own name is taken by the SET clause


@functools.cache
def _reschedule_statement(columns: tuple[str, ...]) -> Any:
    table = Job.__table__  # type: ignore[attr-defined]
    return (
        update(table)
        .where(
            table.c.id == bindparam(f"{_BOUND}job_id"),
            table.c.status == JobStatus.RUNNING,
            table.c.poll_count == bindparam(f"{_BOUND}polls_before", type_=table.c.poll_count.type),
        )
        .values({name: bindparam(f"{_BOUND}{name}", type_=table.c[name].type) for name in columns})
    )


def make_due(settings: Settings, job_id: str, now: datetime | None = None, session: Session | None = None) -> bool:
    """Make a running job's poll due at once (a webhook said it ended); False if it is not running or leased.

    A leased job has a step in flight: its outcome sets the next poll, so moving next_poll_at would be lost.
    Given `session`, the update joins its transaction (the receiver records the delivery in the same one).
    """
    now = now or utcnow()
    statement = (
        update(Job)
        .where(
            col(Job.id) == job_id,
            col(Job.status) == JobStatus.RUNNING,
            or_(col(Job.lease_until).is_(None), col(Job.lease_until) < now),
        )
        .values(next_poll_at=now)
    )
    if session is not None:
        return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]
    with db.session(settings) as own:
        return bool(own.execute(statement).rowcount)  # type: ignore[attr-defined]


def overdue(settings: Settings, due_before: datetime) -> tuple[int, datetime | None]:
    """How many queued or running jobs were due before `due_before` and are not leased, and the oldest due time."""
    now = utcnow()
    query = select(func.count(), func.min(col(Job.next_poll_at))).where(
        col(Job.status).in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        col(Job.next_poll_at) < due_before,
        or_(col(Job.lease_until).is_(None), col(Job.lease_until) < now),
    )
    with db.session(settings) as session:
        count, oldest = session.execute(query).one()
    return int(count), oldest
