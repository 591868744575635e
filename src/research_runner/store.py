"""The job table's SQL: new rows, lookups and conditional transitions. With leases.py, the only SQL about jobs.

Every transition is a conditional UPDATE on the job's current status, so a duplicated or late message can
repeat a step but never apply one twice. How jobs are handed out to workers (claims, takes, the next poll) is
in leases.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlmodel import Session, col

from research_runner import db
from research_runner.attachments import Attachment
from research_runner.models import Figure, Job, JobFile, JobTurn
from research_runner.readonly import job_prefix, only_match
from research_runner.settings import Settings
from research_runner.status import JobStatus, utcnow

# What a finisher's files add to its row: column values, and the chart rows.
Saved = tuple[dict[str, Any], list[Figure]]


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
    return bool(db.execute_plain(session, statement).rowcount)


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


def unwritten_reports(settings: Settings, limit: int = 100) -> list[Job]:
    """Finished jobs whose report is in the row but not yet on disk."""
    query = select(Job).where(col(Job.report_error).is_not(None), col(Job.report_markdown).is_not(None)).limit(limit)
    with db.session(settings) as session:
        return list(session.scalars(query))


def finish(
    settings: Settings, job_id: str, from_statuses: Iterable[str], save: Callable[[], Saved], **values: Any
) -> bool:
    """A terminal transition, then `save()`'s files, their columns and charts, in one transaction; False (nothing
    stored, `save` not called) if the job was no longer in `from_statuses`.

    The guarded UPDATE comes first because it takes the row's lock (PostgreSQL) or the write lock (SQLite): a second
    finisher waits until the first commits, then finds the status changed, so it never rewrites the files of the
    outcome that was stored.
    """
    with db.session(settings) as session:
        if not _transition(session, job_id, from_statuses, values):
            return False
        columns, charts = save()
        db.execute_plain(session, update(Job).where(col(Job.id) == job_id).values(**columns))
        session.add_all(charts)
    return True


def revise_report(settings: Settings, job_id: str, revise: Callable[[Job], str | None]) -> bool:
    """Replace a stored report with `revise(row)` (None: keep it), the row locked meanwhile; False if unchanged.

    An UPDATE takes the lock before the row is read, so two follow-ups linked at once each add their link to what
    the other stored, and `revise` can rewrite the report's file in the same order.
    """
    with db.session(settings) as session:
        lock = update(Job).where(col(Job.id) == job_id).values(updated_at=utcnow())
        job = session.get(Job, job_id) if db.execute_plain(session, lock).rowcount else None
        markdown = revise(job) if job is not None else None
        if job is None or markdown is None:
            session.rollback()  # nothing to store: the row keeps its updated_at too
            return False
        job.report_markdown = markdown
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


def note_error(settings: Settings, job_id: str, error: str) -> None:
    """Say on a job's row what went wrong with its last step, whatever its status (the status stays)."""
    with db.session(settings) as session:
        db.execute_plain(session, update(Job).where(col(Job.id) == job_id).values(error=error, updated_at=utcnow()))
