"""Batches: many jobs stored in one transaction, their progress, and a digest once every job has ended."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

from sqlalchemy import exists, update
from sqlmodel import Session, col, select

from research_runner import db, display, reports
from research_runner.batchfile import Item
from research_runner.exceptions import InvalidInput, JobNotFound
from research_runner.models import ACTIVE_STATUSES, Batch, Job, utcnow
from research_runner.settings import Settings

DIGEST_FOLDER = "batches"
PARAGRAPH_PREVIEW = 600


def add(
    session: Session,
    name: str,
    items: list[Item],
    agent: str,
    *,
    source: str | None = None,
    schedule_id: str | None = None,
    due_at: datetime | None = None,
) -> tuple[Batch, int]:
    """Store a batch and its queued jobs in the caller's transaction; returns (batch, items skipped as known).

    Jobs need no message: the dispatcher sends each job's first step within a tick.
    """
    known = _known_keys(session, [i.idempotency_key for i in items if i.idempotency_key])
    fresh = [item for item in items if item.idempotency_key not in known]
    now = utcnow()
    batch = Batch(
        name=name, source=source, schedule_id=schedule_id, due_at=due_at, job_count=len(fresh), created_at=now
    )
    session.add(batch)
    for item in fresh:
        session.add(
            Job(
                question=item.question,
                agent=item.agent or agent,
                batch_id=batch.id,
                created_at=now,
                next_poll_at=now,
                idempotency_key=item.idempotency_key,
                tags=json.dumps(list(item.tags)) if item.tags else None,
            )
        )
    return batch, len(items) - len(fresh)


def _known_keys(session: Session, keys: list[str | None]) -> set[str | None]:
    if not keys:
        return set()
    return set(session.exec(select(Job.idempotency_key).where(col(Job.idempotency_key).in_(keys))))


def find(settings: Settings, ref: str) -> Batch:
    """A batch by id, unique id prefix, or name (the newest batch of that name)."""
    ref = ref.strip()
    with db.session(settings) as session:
        by_id = list(session.exec(select(Batch).where(col(Batch.id).startswith(ref.lower())).limit(2)))
        if len(by_id) == 1 and len(ref) >= 4:
            return by_id[0]
        by_name = session.exec(
            select(Batch).where(col(Batch.name) == ref).order_by(col(Batch.created_at).desc()).limit(1)
        ).first()
    if by_name is None:
        raise JobNotFound(f"no batch with id or name {ref!r}")
    return by_name


def jobs_of(settings: Settings, batch_id: str) -> list[Job]:
    with db.session(settings) as session:
        query = select(Job).where(col(Job.batch_id) == batch_id).order_by(col(Job.created_at), col(Job.id))
        return list(session.exec(query))


def counts(jobs: list[Job]) -> Counter[str]:
    return Counter(job.status for job in jobs)


def finalize_ready(settings: Settings) -> list[str]:
    """Write the digest of every batch whose jobs have all ended; returns the digest paths written."""
    active = exists().where(col(Job.batch_id) == Batch.id, col(Job.status).in_([str(s) for s in ACTIVE_STATUSES]))
    with db.session(settings) as session:
        ready = list(session.exec(select(Batch).where(col(Batch.finished_at).is_(None), ~active)))
    return [path for batch in ready if (path := _finalize(settings, batch))]


def _finalize(settings: Settings, batch: Batch) -> str | None:
    jobs = jobs_of(settings, batch.id)
    finished = max((j.finished_at or j.updated_at or j.created_at for j in jobs), default=utcnow())
    filename = f"{batch.created_at:%Y-%m-%d}-{reports.slugify(batch.name)}-{batch.short_id}.md"
    path = settings.reports_dir / DIGEST_FOLDER / filename
    reports.write_atomically(path, digest(batch, jobs, path.parent, finished))
    statement = (
        update(Batch)
        .where(col(Batch.id) == batch.id, col(Batch.finished_at).is_(None))
        .values(finished_at=finished, digest_path=str(path))
    )
    with db.session(settings) as session:
        won = bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]
    return str(path) if won else None


def digest(batch: Batch, jobs: list[Job], folder: Path, finished: datetime) -> str:
    tally = counts(jobs)
    tokens = sum(j.total_tokens or 0 for j in jobs)
    lines = [
        f"# Batch: {batch.name}",
        "",
        f"- Batch: `{batch.id}`" + (f" (schedule firing due {batch.due_at.isoformat()})" if batch.due_at else ""),
        f"- Jobs: {len(jobs)} — " + ", ".join(f"{status}: {n}" for status, n in sorted(tally.items())),
        f"- Duration: {display.duration_text((finished - batch.created_at).total_seconds())}",
        f"- Tokens: {tokens:,}",
        "",
    ]
    for number, job in enumerate(jobs, 1):
        lines += _entry(number, job, folder)
    return "\n".join(lines).rstrip() + "\n"


def _entry(number: int, job: Job, folder: Path) -> list[str]:
    lines = [f"## {number}. {_one_line(job.question)}", "", f"- Status: {job.status}", f"- Job: `{job.id}`"]
    if job.report_path:
        link = os.path.relpath(job.report_path, folder)
        lines.append(f"- Report: [{_one_line(job.report_title or link)}](<{link}>)")
    if job.error:
        lines.append(f"- Error: {_one_line(job.error)}")
    paragraph = first_paragraph(job.report_markdown or "")
    if paragraph:
        lines += ["", "> " + paragraph]
    return [*lines, ""]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def first_paragraph(markdown: str) -> str:
    """The first paragraph of prose: no front matter, headings, quotes (notices) or lists."""
    for block in re.split(r"\n\s*\n", display.report_body(markdown)):
        text = block.strip()
        if text and not text.startswith(("#", ">", "-", "*", "|", "1.")):
            flat = _one_line(text)
            return flat if len(flat) <= PARAGRAPH_PREVIEW else flat[: PARAGRAPH_PREVIEW - 1] + "…"
    return ""


def require_items(items: list[Item]) -> None:
    if not items:
        raise InvalidInput("a batch needs at least one question")
