"""The job table's SQL: new rows, lookups, leases and conditional transitions. The only SQL about jobs.

Every transition is a conditional UPDATE on the job's current status, so a duplicated or late message can
repeat a step but never apply one twice.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, insert, literal, or_, select, update
from sqlmodel import Session, col

from research_runner import db
from research_runner.attachments import Attachment
from research_runner.models import Figure, Job, JobFile, JobTurn
from research_runner.readonly import job_prefix, only_match
from research_runner.settings import Settings
from research_runner.status import JobStatus, utcnow

# Polls handed out per dispatch tick at most. Above what one worker can poll in a tick (~700/s here): a lower cap
# was itself the limit after a burst (500 made polls late for a minute once 10,000 creates were done, issue 16).
DISPATCH_BATCH = 2000

# Enough of a question for the dispatcher to label its tasks (worker.task_label flattens and cuts it).
QUESTION_START_CHARS = 120


def new_job(
    settings: Settings,
    question: str,
    agent: str,
    *,
    retry_of: str | None = None,
    idempotency_key: str | None = None,
    batch_id: str | None = None,
    tags: tuple[str, ...] = (),
    held: bool = True,
    agent_config: dict[str, Any] | None = None,
) -> Job:
    """The one way a job row is built: already validated input, queued, due now.

    `held` gives it a lease so the dispatcher stays away while its first step is sent directly; a batch's jobs
    are not held, the dispatcher sends them within a tick.
    """
    now = utcnow()
    return Job(
        question=question,
        agent=agent,
        retry_of=retry_of,
        idempotency_key=idempotency_key,
        batch_id=batch_id,
        tags=json.dumps(list(tags)) if tags else None,
        agent_config=json.dumps(agent_config if agent_config is not None else settings.agent_config()),
        created_at=now,
        next_poll_at=now,
        lease_until=now + timedelta(seconds=settings.lease_seconds) if held else None,
    )


def add(settings: Settings, job: Job) -> Job:
    with db.session(settings) as session:
        session.add(job)
    return job


def add_with_files(settings: Settings, job: Job, files: Sequence[Attachment]) -> Job:
    """A new job and the files that go with its question, in one transaction."""
    with db.session(settings) as session:
        session.add(job)
        session.add_all(file_rows(job.id, files))
    return job


def file_rows(job_id: str, files: Sequence[Attachment]) -> list[JobFile]:
    """The rows that keep a job's files, in the order they go with its question."""
    return [
        JobFile(job_id=job_id, position=n, name=f.name, mime_type=f.mime_type, size=f.size, sha256=f.sha256,
                data=f.data)
        for n, f in enumerate(files, 1)
    ]  # fmt: skip


def transition(settings: Settings, job_id: str, from_statuses: Iterable[str], **values: Any) -> bool:
    """Apply `values` only if the job is still in one of `from_statuses`; True if it was."""
    with db.session(settings) as session:
        return _transition(session, job_id, from_statuses, values)


def _transition(session: Session, job_id: str, from_statuses: Iterable[str], values: dict[str, Any]) -> bool:
    values.setdefault("updated_at", utcnow())
    statement = (
        update(Job).where(col(Job.id) == job_id, col(Job.status).in_([str(s) for s in from_statuses])).values(**values)
    )
    return bool(_core(session, statement).rowcount)


def _core(session: Session, statement: Any, rows: list[dict[str, Any]] | None = None) -> Any:
    """Run a statement as plain SQL on the session's connection (in its transaction). The session's ORM path
    would also look for loaded objects to update in memory, which no caller here keeps: ~a third of the CPU of
    a worker's UPDATE (issue 16)."""
    return session.connection().execute(statement, rows)


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
        moved = set(_core(session, statement).scalars())
        if turns:
            _core(session, insert(JobTurn), [turn.model_dump(exclude={"id"}) for turn in turns])
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


def load(settings: Settings, job_id: str) -> Job | None:
    with db.session(settings) as session:
        return session.get(Job, job_id)


def load_many(settings: Settings, job_ids: Iterable[str]) -> list[Job]:
    """The jobs that exist among `job_ids`, in one query."""
    with db.session(settings) as session:
        return list(session.scalars(select(Job).where(col(Job.id).in_(list(job_ids)))))


def find(settings: Settings, ref: str) -> Job:
    """A job by its id or a unique prefix of it (as shown by `research list`)."""
    prefix = job_prefix(ref)
    with db.session(settings) as session:
        return only_match(prefix, list(session.scalars(select(Job).where(col(Job.id).startswith(prefix)).limit(2))))


def list_jobs(settings: Settings, status: str | None = None, limit: int = 20, batch_id: str | None = None) -> list[Job]:
    """Jobs newest first; a batch's jobs in the order of its file."""
    query = select(Job).limit(limit)
    if status:
        query = query.where(col(Job.status) == status)
    if batch_id:
        query = query.where(col(Job.batch_id) == batch_id).order_by(col(Job.batch_position), col(Job.id))
    else:
        query = query.order_by(col(Job.created_at).desc())
    with db.session(settings) as session:
        return list(session.scalars(query))


def by_idempotency_key(settings: Settings, key: str) -> Job | None:
    with db.session(settings) as session:
        return session.scalars(select(Job).where(col(Job.idempotency_key) == key)).first()


def forget(settings: Settings, job_id: str) -> None:
    with db.session(settings) as session:
        session.execute(delete(Job).where(col(Job.id) == job_id, col(Job.status) == JobStatus.QUEUED))


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
    with db.session(settings) as session:
        return [
            (row[0], row[1], row[2])
            for status, limit in ((JobStatus.RUNNING, DISPATCH_BATCH), (JobStatus.QUEUED, creates_limit))
            for row in _core(session, _claim(status, limit, now, lease))
        ]


def poll_lag(settings: Settings, now: datetime | None = None) -> float:
    """Seconds since the oldest poll handed out and not yet done came due (0 if there is none): how far behind
    the workers are, whichever of them holds it and whether it waits in the broker or in a worker."""
    now = now or utcnow()
    running_late = (col(Job.status) == JobStatus.RUNNING, col(Job.next_poll_at) <= now, col(Job.lease_until) > now)
    with db.session(settings) as session:
        oldest = session.scalar(select(func.min(col(Job.next_poll_at))).where(*running_late))
    return 0.0 if oldest is None else max((now - oldest).total_seconds(), 0.0)


def _claim(status: JobStatus, limit: int, now: datetime, lease: datetime) -> Any:
    due = and_(
        col(Job.status) == status,
        col(Job.next_poll_at) <= now,
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
        return int(_core(session, statement).rowcount)


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
        _core(session, _reschedule_statement(columns), rows)


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


def unwritten_reports(settings: Settings, limit: int = 100) -> list[Job]:
    """Finished jobs whose report is in the row but not yet on disk."""
    query = select(Job).where(col(Job.report_error).is_not(None), col(Job.report_markdown).is_not(None)).limit(limit)
    with db.session(settings) as session:
        return list(session.scalars(query))


def finish(settings: Settings, job_id: str, from_statuses: Iterable[str], charts: list[Figure], **values: Any) -> bool:
    """A terminal transition and the report's charts, in one transaction; False (nothing stored) if the job was
    no longer in `from_statuses`."""
    with db.session(settings) as session:
        if not _transition(session, job_id, from_statuses, values):
            return False
        session.add_all(charts)
    return True


def figures_of(settings: Settings, job_id: str) -> list[Figure]:
    with db.session(settings) as session:
        return list(session.scalars(select(Figure).where(col(Figure.job_id) == job_id).order_by(col(Figure.number))))


def add_turn(settings: Settings, turn: JobTurn) -> None:
    with db.session(settings) as session:
        session.add(turn)


def turns_of(settings: Settings, job_id: str) -> list[JobTurn]:
    with db.session(settings) as session:
        query = select(JobTurn).where(col(JobTurn.job_id) == job_id).order_by(col(JobTurn.id))
        return list(session.scalars(query))


def files_of(settings: Settings, job_id: str) -> list[JobFile]:
    with db.session(settings) as session:
        return list(
            session.scalars(select(JobFile).where(col(JobFile.job_id) == job_id).order_by(col(JobFile.position)))
        )


def follow_ups_of(settings: Settings, job_id: str) -> list[Job]:
    with db.session(settings) as session:
        return list(session.scalars(select(Job).where(col(Job.parent_id) == job_id).order_by(col(Job.created_at))))


def spent_this_month(settings: Settings, now: datetime) -> float:
    """Estimated dollars of the jobs that finished this calendar month (UTC)."""
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    query = select(func.coalesce(func.sum(col(Job.cost_usd)), 0.0)).where(col(Job.finished_at) >= month)
    with db.session(settings) as session:
        return float(session.execute(query).scalar_one())


def forget_figures(settings: Settings, job_id: str) -> None:
    with db.session(settings) as session:
        session.execute(delete(Figure).where(col(Figure.job_id) == job_id))


def ended_before(settings: Settings, before: datetime) -> list[Job]:
    query = select(Job).where(col(Job.finished_at) < before).order_by(col(Job.finished_at))
    with db.session(settings) as session:
        return list(session.scalars(query))


def finished_since(settings: Settings, since: datetime | None, batch_id: str | None = None) -> list[Job]:
    query = select(Job).where(col(Job.finished_at).is_not(None)).order_by(col(Job.finished_at))
    if since is not None:
        query = query.where(col(Job.finished_at) >= since)
    if batch_id is not None:
        query = query.where(col(Job.batch_id) == batch_id)
    with db.session(settings) as session:
        return list(session.scalars(query))


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


def _retry_of(settings: Settings, job: Job, held: bool) -> tuple[Job, list[JobFile]]:
    """A new job asking again what `job` asked, with the same agent_config and files."""
    config = json.loads(job.agent_config) if job.agent_config else None
    new = new_job(settings, job.question, job.agent, retry_of=job.id, tags=tuple(json.loads(job.tags or "[]")),
                  held=held, agent_config=config)  # fmt: skip
    new.files, new.batch_id, new.batch_position = job.files, job.batch_id, job.batch_position
    files = [JobFile(job_id=new.id, position=f.position, name=f.name, mime_type=f.mime_type, size=f.size,
                     sha256=f.sha256, data=f.data) for f in files_of(settings, job.id)]  # fmt: skip
    return new, files


def add_retry(settings: Settings, job: Job) -> Job:
    """The retry of one job, held for the first step its caller sends."""
    new, files = _retry_of(settings, job, held=True)
    with db.session(settings) as session:
        session.add(new)
        session.add_all(files)
    return new


def add_retries(settings: Settings, jobs: Sequence[Job]) -> list[Job]:
    """Retries of several jobs in one transaction; the dispatcher starts them."""
    made = [_retry_of(settings, job, held=False) for job in jobs]
    with db.session(settings) as session:
        for new, files in made:
            session.add(new)
            session.add_all(files)
    return [new for new, _ in made]


def not_retried(settings: Settings, status: str, batch_id: str | None = None) -> list[Job]:
    """Jobs in `status` that no other job retries yet."""
    retried = select(col(Job.retry_of)).where(col(Job.retry_of).is_not(None))
    query = select(Job).where(col(Job.status) == status, col(Job.id).not_in(retried)).order_by(col(Job.created_at))
    if batch_id is not None:
        query = query.where(col(Job.batch_id) == batch_id)
    with db.session(settings) as session:
        return list(session.scalars(query))


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


def note_error(settings: Settings, job_id: str, error: str) -> None:
    """Say on a job's row what went wrong with its last step, whatever its status (the status stays)."""
    with db.session(settings) as session:
        _core(session, update(Job).where(col(Job.id) == job_id).values(error=error, updated_at=utcnow()))
