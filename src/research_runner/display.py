"""How jobs look in a terminal: progress lines, tables, the status card, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

from research_runner.settings import GOOGLE_API_URL
from research_runner.status import JobStatus, utcnow

if TYPE_CHECKING:  # rich is imported where a function draws: `research status` prints plain lines
    from rich.console import Console
    from rich.table import Table

    from research_runner.models import Job
    from research_runner.readonly import JobRow

# Read-only commands show rows read without the ORM (readonly.py); the rest show the model.
AnyJob: TypeAlias = "Job | JobRow"

QUESTION_PREVIEW = 60
THOUGHT_PREVIEW = 100


def job_dict(job: AnyJob) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
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
        "created_at": iso(job.created_at),
        "submitted_at": iso(job.submitted_at),
        "finished_at": iso(job.finished_at),
        "poll_count": job.poll_count,
        "total_tokens": job.total_tokens,
        "retry_of": job.retry_of,
        "idempotency_key": job.idempotency_key,
        "batch_id": job.batch_id,
        "tags": json.loads(job.tags) if job.tags else [],
        "emulated": emulated(job),
        "api_endpoint": job.api_endpoint,
        "report_error": job.report_error,
        "figures": json.loads(job.figures) if job.figures else [],
        "files": json.loads(job.files) if job.files else [],
        "usage": json.loads(job.usage_json) if job.usage_json else None,
        "estimated_cost_usd": job.cost_usd,
        "parent_id": job.parent_id,
        "remote_deleted_at": iso(job.remote_deleted_at),
        "local_deleted_at": iso(job.local_deleted_at),
    }


def emulated(job: AnyJob) -> bool | None:
    """Whether the job's interaction was created by an emulator rather than Google (None: not created yet)."""
    return None if job.api_endpoint is None else job.api_endpoint != GOOGLE_API_URL


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def when(moment: datetime) -> str:
    """The one way a point in time is shown to people: in UTC, to the minute, e.g. `2026-11-26 10:38 UTC`."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def duration_text(seconds: float) -> str:
    """The one way a length of time is shown: `45s`, `12m 05s`, `3h 04m 05s`, `2d 03h 04m`."""
    minutes, secs = divmod(max(int(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def age(moment: datetime, now: datetime | None = None) -> str:
    """How long ago, in the largest whole unit: `45s`, `12m`, `3h`, `2d`; for narrow columns."""
    seconds = max(int(((now or utcnow()) - moment).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def elapsed(job: AnyJob) -> str:
    """How long the job has run: from creation to its end, or to now if it has not ended."""
    return duration_text(((job.finished_at or utcnow()) - job.created_at).total_seconds())


def cut(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its start and "…" in `limit`: the one way text is cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def preview(text: str | None, limit: int) -> str:
    """`text` on one line (every run of whitespace one space), cut to `limit` characters."""
    return cut(" ".join((text or "").split()), limit)


def plan_hint(job: AnyJob) -> str:
    """What a job waiting with its research plan asks of the user."""
    return f"plan ready: research show {job.short_id}"


def activity(job: AnyJob) -> str:
    """The latest thing a job has to say: that its plan waits for the user, else its latest thought."""
    return plan_hint(job) if job.status == JobStatus.PLAN_READY else preview(job.last_thought, THOUGHT_PREVIEW)


def progress_line(job: AnyJob) -> str:
    parts = [job.short_id, job.status, elapsed(job), f"{job.poll_count} polls"]
    return " · ".join([*parts, activity(job)] if activity(job) else parts)


def outcome_line(job: AnyJob) -> str:
    if job.status == JobStatus.COMPLETED:
        return f"Job {job.short_id} completed: {job.report_path or job.report_error}"
    if job.status == JobStatus.PLAN_READY:
        return (
            f"Job {job.short_id} has a research plan for you: `research show {job.short_id}`, then "
            f'`research approve {job.short_id}` or `research revise {job.short_id} "what to change"`'
        )
    detail = f": {job.error}" if job.error else ""
    saved = f" (partial report: {job.report_path})" if job.report_path else ""
    return f"Job {job.short_id} {job.status}{detail}{saved}"


def jobs_table(jobs: Sequence[AnyJob], now: datetime | None = None) -> Table:
    """One line per job: id, status, age since submit, and as much of the question as the width leaves."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for column in ("ID", "STATUS", "AGE"):
        table.add_column(column, no_wrap=True)
    # The only column rich may narrow; each question is cut to one line there rather than wrapped.
    table.add_column("QUESTION")
    for job in jobs:
        # Text, not markup: questions may contain [brackets].
        question = Text(" ".join(job.question.split()), no_wrap=True, overflow="ellipsis")
        table.add_row(Text(job.short_id), Text(job.status), Text(age(job.created_at, now)), question)
    return table


def status_card(job: AnyJob) -> str:
    rows = [
        ("id", job.id),
        ("status", job.status),
        ("question", job.question),
        ("agent", job.agent),
        ("interaction", job.interaction_id),
        ("created", when(job.created_at)),
        ("submitted", job.submitted_at and when(job.submitted_at)),
        ("finished", job.finished_at and when(job.finished_at)),
        ("elapsed", elapsed(job)),
        ("polls", job.poll_count),
        ("tokens", job.total_tokens),
        ("latest thought", job.last_thought),
        ("cost", f"${job.cost_usd:.2f} (estimated)" if job.cost_usd is not None else None),
        ("title", job.report_title),
        ("report", job.report_path),
        ("figures", ", ".join(json.loads(job.figures)) if job.figures else None),
        ("files", ", ".join(f["name"] for f in json.loads(job.files)) if job.files else None),
        ("follow-up of", job.parent_id),
        ("retry of", job.retry_of),
        ("error", job.error),
        ("report problem", job.report_error),
        ("deleted", _deleted(job)),
    ]
    return "\n".join(f"{name + ':':<16}{value}" for name, value in rows if value not in (None, ""))


def _deleted(job: AnyJob) -> str | None:
    parts = [f"{where} {when(moment)}" for where, moment in
             (("at Google", job.remote_deleted_at), ("locally", job.local_deleted_at)) if moment]  # fmt: skip
    return ", ".join(parts) or None


def report_body(markdown: str) -> str:
    """The report without its front matter, for reading in a terminal."""
    if markdown.startswith("---\n"):
        end = markdown.find("\n---", 4)
        if end != -1:
            return markdown[end + 4 :].lstrip("\n")
    return markdown


def report_text(job: AnyJob) -> str:
    """The report as plain Markdown for a pipe or a file: every source URL readable, no padding added."""
    assert job.report_markdown is not None
    return report_body(job.report_markdown).rstrip("\n") + "\n"


def render_markdown(console: Console, markdown: str, header: str, plain: bool | None = None) -> None:
    """Markdown rendered on a terminal under a dim header line; plain text elsewhere (`plain=None` asks)."""
    if plain if plain is not None else not console.is_terminal:
        console.out(f"{header}\n\n{report_body(markdown).rstrip()}\n", highlight=False, end="")
        return
    from rich.markdown import Markdown  # markdown-it and pygments cost every other command ~30 ms
    from rich.text import Text

    console.print(Text(header, style="dim"))
    console.print(Markdown(report_body(markdown)))


def render_report(console: Console, job: AnyJob, plain: bool | None = None) -> None:
    """Rendered Markdown on a terminal; plain Markdown text elsewhere (`plain=None` asks the console)."""
    if plain is None:
        plain = not console.is_terminal
    if plain:
        # Rich would turn links into terminal hyperlinks, which a pipe loses, and pad lines to the width.
        console.out(report_text(job), highlight=False, end="")
        return
    from rich.markdown import Markdown  # markdown-it and pygments cost every other command ~30 ms
    from rich.text import Text

    assert job.report_markdown is not None
    console.print(Text(f"{job.short_id} · {job.status} · {job.report_path}", style="dim"))
    console.print(Markdown(report_body(job.report_markdown)))
