"""Batches: many jobs stored in one transaction, their progress, and a digest once every job has ended."""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from sqlalchemy import exists, update
from sqlmodel import Session, col, select

from research_runner import attachments, db, display, reports, store
from research_runner.batchfile import Item
from research_runner.constants import MIN_ID_PREFIX
from research_runner.exceptions import InvalidInput, JobNotFound
from research_runner.models import Batch, Job
from research_runner.settings import Settings
from research_runner.status import OPEN_STATUSES, utcnow

DIGEST_FOLDER = "batches"
PARAGRAPH_PREVIEW = 600
NAME_MAX_CHARS = 200  # the batches.name column

log = logging.getLogger(__name__)
T = TypeVar("T")


class NothingToSubmit(InvalidInput):
    """Every item of a batch was already submitted (its idempotency key is known), so no batch was stored."""


@dataclass(frozen=True)
class Failure:
    """A batch or schedule whose step raised; the step went on with the others. `error` is one line."""

    id: str
    name: str
    error: str


@dataclass
class Outcome(Generic[T]):
    """What a step over many batches or schedules did: what it produced, and which ones failed."""

    done: list[T] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def check_batch_name(name: str) -> str:
    """The name to store: stripped, not blank, short enough for its column. Raises InvalidInput otherwise."""
    stripped = name.strip()
    if not stripped or len(stripped) > NAME_MAX_CHARS:
        raise InvalidInput(f"a batch name needs 1 to {NAME_MAX_CHARS} characters, not only spaces")
    return stripped


def add(
    settings: Settings,
    session: Session,
    name: str,
    items: list[Item],
    agent: str,
    *,
    source: str | None = None,
    schedule_id: str | None = None,
    due_at: datetime | None = None,
    charts: bool | None = None,
) -> tuple[Batch, int]:
    """Store a batch and its queued jobs in the caller's transaction; returns (batch, items skipped as known).

    Jobs need no message: the dispatcher sends each job's first step within a tick.
    Raises InvalidInput for a blank name or no items, and NothingToSubmit (an InvalidInput) when every item's
    idempotency key is already known: then nothing is added to the session, so no empty batch or digest appears.
    """
    name = check_batch_name(name)
    require_items(items)
    known = _known_keys(session, [i.idempotency_key for i in items if i.idempotency_key])
    fresh = [item for item in items if item.idempotency_key not in known]
    if not fresh:
        raise NothingToSubmit(
            f"all {len(items)} question(s) were already submitted (their idempotency keys are known); nothing stored"
        )
    now = utcnow()
    batch = Batch(
        name=name, source=source, schedule_id=schedule_id, due_at=due_at, job_count=len(fresh), created_at=now
    )
    session.add(batch)
    for position, item in enumerate(fresh, 1):
        config = settings.agent_config(charts=charts, planning=item.plan)
        job = store.new_job(settings, item.question, item.agent or agent, idempotency_key=item.idempotency_key,
                            batch_id=batch.id, tags=item.tags, held=False, agent_config=config)  # fmt: skip
        job.batch_position = position  # jobs of a batch share a creation time: this keeps the file's order
        found = attachments.read([Path(f) for f in item.files])  # checked when read; read again as stored now
        job.files = json.dumps([a.describe() for a in found]) if found else None
        session.add(job)
        session.add_all(store.file_rows(job.id, found))
    return batch, len(items) - len(fresh)


def _known_keys(session: Session, keys: list[str | None]) -> set[str | None]:
    if not keys:
        return set()
    return set(session.exec(select(Job.idempotency_key).where(col(Job.idempotency_key).in_(keys))))


def find(settings: Settings, ref: str) -> Batch:
    """A batch by id, unique id prefix, or name (the newest batch of that name).

    An id prefix that several batches share, and that names no batch, raises InvalidInput.
    """
    ref = ref.strip()
    with db.session(settings) as session:
        by_id = []
        if len(ref) >= MIN_ID_PREFIX:
            by_id = list(session.exec(select(Batch).where(col(Batch.id).startswith(ref.lower())).limit(2)))
        if len(by_id) == 1:
            return by_id[0]
        by_name = session.exec(
            select(Batch).where(col(Batch.name) == ref).order_by(col(Batch.created_at).desc()).limit(1)
        ).first()
    if by_name is not None:
        return by_name
    if by_id:
        raise InvalidInput(f"batch id {ref!r} is ambiguous; give more characters")
    raise JobNotFound(f"no batch with id or name {ref!r}")


def jobs_of(settings: Settings, batch_id: str) -> list[Job]:
    with db.session(settings) as session:
        query = select(Job).where(col(Job.batch_id) == batch_id).order_by(col(Job.batch_position), col(Job.id))
        return list(session.exec(query))


def counts(jobs: list[Job]) -> Counter[str]:
    return Counter(job.status for job in jobs)


def finalize_ready(settings: Settings) -> list[str]:
    """Write the digest of every batch whose jobs have all ended; returns the digest paths written.

    A batch whose digest fails is logged and skipped (see finalize_each); it is tried again next time.
    """
    return finalize_each(settings).done


def finalize_each(settings: Settings) -> Outcome[str]:
    """Like finalize_ready, one batch at a time: one digest that fails to write does not stop the others.

    Returns the digest paths written, and a Failure (batch id, name, error) for each batch that raised.
    """
    # A plan waiting for the user is not an end: the digest waits for the research it leads to.
    active = exists().where(col(Job.batch_id) == Batch.id, col(Job.status).in_([str(s) for s in OPEN_STATUSES]))
    with db.session(settings) as session:
        ready = list(session.exec(select(Batch).where(col(Batch.finished_at).is_(None), ~active)))
    outcome: Outcome[str] = Outcome()
    for batch in ready:
        try:
            path = _finalize(settings, batch)
        except Exception as exc:
            log.exception("the digest of batch %s (%s) failed", batch.id, reports.one_line(batch.name))
            outcome.failures.append(failure(batch.id, batch.name, exc))
            _record_digest_error(settings, batch, outcome.failures[-1].error)
        else:
            outcome.done += [path] if path else []
    return outcome


def _record_digest_error(settings: Settings, batch: Batch, error: str) -> None:
    if error != batch.digest_error:
        with db.session(settings) as session:
            session.execute(update(Batch).where(col(Batch.id) == batch.id).values(digest_error=error))


def failure(id_: str, name: str, exc: BaseException) -> Failure:
    return Failure(id_, name, reports.one_line(f"{type(exc).__name__}: {exc}"))


def _finalize(settings: Settings, batch: Batch) -> str | None:
    jobs = jobs_of(settings, batch.id)
    finished = max((j.finished_at or j.updated_at or j.created_at for j in jobs), default=utcnow())
    filename = f"{batch.created_at:%Y-%m-%d}-{reports.slugify(batch.name)}-{batch.short_id}.md"
    path = settings.reports_dir / DIGEST_FOLDER / filename
    reports.write_atomically(path, digest(batch, jobs, path.parent, finished))
    statement = (
        update(Batch)
        .where(col(Batch.id) == batch.id, col(Batch.finished_at).is_(None))
        .values(finished_at=finished, digest_path=str(path), digest_error=None)
    )
    with db.session(settings) as session:
        won = bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]
    return str(path) if won else None


def digest(batch: Batch, jobs: list[Job], folder: Path, finished: datetime) -> str:
    tally = counts(jobs)
    tokens = sum(j.total_tokens or 0 for j in jobs)
    lines = [
        f"# Batch: {reports.inline_text(batch.name)}",
        "",
        f"- Batch: `{batch.id}`" + (f" (schedule firing due {display.when(batch.due_at)})" if batch.due_at else ""),
        f"- Jobs: {len(jobs)} — " + ", ".join(f"{status}: {n}" for status, n in sorted(tally.items())),
        f"- Duration: {display.duration_text((finished - batch.created_at).total_seconds())}",
        f"- Tokens: {tokens:,}",
        f"- Estimated cost: ${sum(j.cost_usd or 0.0 for j in jobs):,.2f}",
        f"- Figures: {sum(_figure_count(j) for j in jobs)}",
        "",
    ]
    for number, job in enumerate(jobs, 1):
        lines += _entry(number, job, folder)
    return "\n".join(lines).rstrip() + "\n"


def _entry(number: int, job: Job, folder: Path) -> list[str]:
    # Questions, titles and errors are user or model text: each is one escaped line, so none starts a heading,
    # a list, front matter or raw HTML in the digest.
    lines = [f"## {number}. {reports.inline_text(job.question)}", "", f"- Status: {job.status}", f"- Job: `{job.id}`"]
    if job.report_path:
        link = os.path.relpath(job.report_path, folder)
        lines.append(f"- Report: [{reports.inline_text(job.report_title or link)}](<{link}>)")
    if job.cost_usd is not None:
        lines.append(f"- Estimated cost: ${job.cost_usd:,.2f}")
    if job.figures:
        lines.append(f"- Figures: {_figure_count(job)}")
    if job.error:
        lines.append(f"- Error: {reports.inline_text(job.error)}")
    paragraph = first_paragraph(job.report_markdown or "")
    if paragraph:
        lines += ["", "> " + paragraph.replace("<", "&lt;")]  # the model's Markdown stays, its raw HTML does not
    return [*lines, ""]


def _figure_count(job: Job) -> int:
    return len(json.loads(job.figures)) if job.figures else 0


def first_paragraph(markdown: str) -> str:
    """The first paragraph of prose: no front matter, headings, quotes (notices) or lists."""
    for block in re.split(r"\n\s*\n", display.report_body(markdown)):
        text = block.strip()
        if text and not text.startswith(("#", ">", "-", "*", "|", "1.")):
            return display.preview(text, PARAGRAPH_PREVIEW)
    return ""


def require_items(items: list[Item]) -> None:
    if not items:
        raise InvalidInput("a batch needs at least one question")


def failing_digests(settings: Settings) -> list[Batch]:
    """Batches whose digest could not be written yet."""
    with db.session(settings) as session:
        return list(session.exec(select(Batch).where(col(Batch.digest_error).is_not(None))))
