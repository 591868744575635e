"""Read-only queries of the web pages that the Client has no method for: filtered pages of jobs, a job's
charts, turns and follow-ups, batches. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func
from sqlalchemy.orm import load_only
from sqlmodel import col, select

from research_runner import db, schedules
from research_runner.exceptions import InvalidInput, JobNotFound
from research_runner.models import Batch, Figure, Job, JobTurn, Schedule
from research_runner.settings import Settings
from research_runner.status import JobStatus

PER_PAGE = 50
# What a row of the jobs table shows; the report and plan texts stay in the database.
LIST_COLUMNS: tuple[Any, ...] = (
    Job.id, Job.question, Job.agent, Job.status, Job.created_at, Job.finished_at, Job.report_title,
    Job.batch_id, Job.cost_usd, Job.parent_id,
)  # fmt: skip


@dataclass(frozen=True)
class JobFilter:
    status: str = ""
    batch: str = ""
    schedule: str = ""
    agent: str = ""
    since: str = ""
    until: str = ""
    page: int = 1

    @classmethod
    def from_params(cls, params: Any) -> JobFilter:
        values = {name: str(params.get(name, "")).strip() for name in ("status", "batch", "schedule", "agent")}
        values |= {name: str(params.get(name, "")).strip() for name in ("since", "until")}
        return cls(**values, page=page_number(params.get("page")))

    def query_string(self, page: int) -> str:
        pairs = {k: v for k, v in vars(self).items() if k != "page" and v}
        return urlencode({**pairs, "page": page})

    def base_url(self) -> str:
        """The list's URL with these filters, ready for `page=N` to be appended."""
        pairs = urlencode({k: v for k, v in vars(self).items() if k != "page" and v})
        return "/jobs?" + (pairs + "&" if pairs else "")


@dataclass
class JobPage:
    jobs: list[Job]
    page: int
    has_next: bool
    batches: dict[str, Batch] = field(default_factory=dict)


def page_number(raw: Any) -> int:
    try:
        return max(1, min(int(str(raw or "1")), 100_000))
    except ValueError:
        raise InvalidInput(f"page must be a number, not {str(raw)[:40]!r}") from None


def parse_day(raw: str, name: str) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a date like 2026-11-27, not {raw[:40]!r}") from None


def list_jobs(settings: Settings, wanted: JobFilter, batch_id: str | None, schedule_id: str | None) -> JobPage:
    """One page of jobs, newest first, matching every filter given."""
    if wanted.status and wanted.status not in set(JobStatus):
        raise InvalidInput(f"unknown status {wanted.status[:40]!r}")
    query = select(Job).options(load_only(*LIST_COLUMNS))
    for condition in _conditions(wanted, batch_id, schedule_id):
        query = query.where(condition)
    offset = (wanted.page - 1) * PER_PAGE
    query = query.order_by(col(Job.created_at).desc(), col(Job.id).desc()).offset(offset).limit(PER_PAGE + 1)
    with db.session(settings) as session:
        jobs = list(session.scalars(query))
        batch_ids = {job.batch_id for job in jobs if job.batch_id}
        query_batches = select(Batch).where(col(Batch.id).in_(batch_ids))
        batches = {batch.id: batch for batch in session.scalars(query_batches)} if batch_ids else {}
    return JobPage(jobs[:PER_PAGE], wanted.page, len(jobs) > PER_PAGE, batches)


def _conditions(wanted: JobFilter, batch_id: str | None, schedule_id: str | None) -> list[Any]:
    conditions: list[Any] = []
    if wanted.status:
        conditions.append(col(Job.status) == wanted.status)
    if batch_id:
        conditions.append(col(Job.batch_id) == batch_id)
    if schedule_id:
        of_schedule = select(col(Batch.id)).where(col(Batch.schedule_id) == schedule_id)
        conditions.append(col(Job.batch_id).in_(of_schedule))
    if wanted.agent:
        conditions.append(col(Job.agent) == wanted.agent)
    since, until = parse_day(wanted.since, "from"), parse_day(wanted.until, "to")
    if since:
        conditions.append(col(Job.created_at) >= datetime.combine(since, time(), UTC))
    if until:
        conditions.append(col(Job.created_at) < datetime.combine(until + timedelta(days=1), time(), UTC))
    return conditions


def schedule_named(settings: Settings, name: str) -> Schedule:
    """The schedule a filter names; an unknown one makes the filter bad (400), it is not a missing page (404)."""
    try:
        return schedules.find(settings, name)
    except JobNotFound as exc:
        raise InvalidInput(str(exc)) from None


@dataclass
class JobDetail:
    """Everything a job's page shows besides the job row itself."""

    figures: list[Figure]
    turns: list[JobTurn]
    children: list[Job]
    parent: Job | None
    batch: Batch | None


def detail(settings: Settings, job: Job) -> JobDetail:
    columns: tuple[Any, ...] = (Figure.id, Figure.job_id, Figure.number, Figure.mime_type, Figure.path, Figure.note)
    figure_columns = load_only(*columns)
    with db.session(settings) as session:
        figures = session.scalars(
            select(Figure).options(figure_columns).where(col(Figure.job_id) == job.id).order_by(col(Figure.number))
        )
        turns = session.scalars(select(JobTurn).where(col(JobTurn.job_id) == job.id).order_by(col(JobTurn.id)))
        children = session.scalars(
            select(Job)
            .options(load_only(*LIST_COLUMNS))
            .where(col(Job.parent_id) == job.id)
            .order_by(col(Job.created_at))
        )
        parent = session.get(Job, job.parent_id) if job.parent_id else None
        batch = session.get(Batch, job.batch_id) if job.batch_id else None
        return JobDetail(list(figures), list(turns), list(children), parent, batch)


def figure(settings: Settings, job_id: str, number: int) -> Figure | None:
    with db.session(settings) as session:
        query = select(Figure).where(col(Figure.job_id) == job_id, col(Figure.number) == number)
        return session.scalars(query).first()


def figures_with_data(settings: Settings, job_id: str) -> list[Figure]:
    with db.session(settings) as session:
        query = select(Figure).where(col(Figure.job_id) == job_id).order_by(col(Figure.number))
        return list(session.scalars(query))


def batch_page(settings: Settings, page: int) -> tuple[list[Batch], bool, dict[str, str]]:
    """A page of batches, newest first, and the names of the schedules that made them."""
    query = select(Batch).order_by(col(Batch.created_at).desc()).offset((page - 1) * PER_PAGE).limit(PER_PAGE + 1)
    with db.session(settings) as session:
        batches = list(session.scalars(query))
        names = {s.id: s.name for s in session.scalars(select(Schedule))}
    return batches[:PER_PAGE], len(batches) > PER_PAGE, names


def count_jobs(settings: Settings) -> int:
    with db.session(settings) as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)
