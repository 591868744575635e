"""How jobs look in a terminal: progress lines, tables, the status card, JSON for scripts."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from research_runner.models import Job, JobStatus, utcnow

QUESTION_PREVIEW = 60
THOUGHT_PREVIEW = 100


def job_dict(job: Job) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": job.id,
        "status": job.status,
        "question": job.question,
        "agent": job.agent,
        "interaction_id": job.interaction_id,
        "report_path": job.report_path,
        "report_title": job.report_title,
        "error": job.error,
        "created_at": when(job.created_at),
        "submitted_at": when(job.submitted_at),
        "finished_at": when(job.finished_at),
        "poll_count": job.poll_count,
        "total_tokens": job.total_tokens,
        "retry_of": job.retry_of,
        "idempotency_key": job.idempotency_key,
        "batch_id": job.batch_id,
        "tags": json.loads(job.tags) if job.tags else [],
    }


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def duration_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def elapsed(job: Job) -> str:
    seconds = int(((job.finished_at or utcnow()) - job.created_at).total_seconds())
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def preview(text: str | None, limit: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def progress_line(job: Job) -> str:
    parts = [job.short_id, job.status, elapsed(job), f"{job.poll_count} polls"]
    if job.last_thought:
        parts.append(preview(job.last_thought, THOUGHT_PREVIEW))
    return " · ".join(parts)


def outcome_line(job: Job) -> str:
    if job.status == JobStatus.COMPLETED:
        return f"Job {job.short_id} completed: {job.report_path}"
    detail = f": {job.error}" if job.error else ""
    saved = f" (partial report: {job.report_path})" if job.report_path else ""
    return f"Job {job.short_id} {job.status}{detail}{saved}"


def jobs_table(jobs: list[Job]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "STATUS", "AGE", "QUESTION", "REPORT"):
        table.add_column(column, no_wrap=column != "QUESTION")
    for job in jobs:
        # Text, not markup: questions and paths may contain [brackets].
        cells = (job.short_id, job.status, elapsed(job), preview(job.question, QUESTION_PREVIEW), job.report_path or "")
        table.add_row(*(Text(cell) for cell in cells))
    return table


def status_card(job: Job) -> str:
    rows = [
        ("id", job.id),
        ("status", job.status),
        ("question", job.question),
        ("agent", job.agent),
        ("interaction", job.interaction_id),
        ("created", job.created_at),
        ("submitted", job.submitted_at),
        ("finished", job.finished_at),
        ("elapsed", elapsed(job)),
        ("polls", job.poll_count),
        ("tokens", job.total_tokens),
        ("latest thought", job.last_thought),
        ("title", job.report_title),
        ("report", job.report_path),
        ("retry of", job.retry_of),
        ("error", job.error),
    ]
    return "\n".join(f"{name + ':':<16}{value}" for name, value in rows if value not in (None, ""))


def report_body(markdown: str) -> str:
    """The report without its front matter, for reading in a terminal."""
    if markdown.startswith("---\n"):
        end = markdown.find("\n---", 4)
        if end != -1:
            return markdown[end + 4 :].lstrip("\n")
    return markdown


def render_report(console: Console, job: Job) -> None:
    assert job.report_markdown is not None
    console.print(Text(f"{job.short_id} · {job.status} · {job.report_path}", style="dim"))
    console.print(Markdown(report_body(job.report_markdown)))
