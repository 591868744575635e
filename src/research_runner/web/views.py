"""What a job's page shows, built from the database: the rendered report with its charts, the thread, the
timeline, timings, usage and cost. Shared by the page, its live fragment and the HTML export."""

from __future__ import annotations

import base64
import json
import mimetypes
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from markupsafe import Markup

from research_runner.models import Figure, Job
from research_runner.settings import Settings
from research_runner.status import ACTIVE_STATUSES, utcnow
from research_runner.web import queries, render

# Served and embedded as images; anything else (SVG can hold script) is not.
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


@dataclass(frozen=True)
class Chart:
    number: int
    mime_type: str | None
    path: str | None
    note: str | None

    @property
    def shown(self) -> bool:
        return self.mime_type in IMAGE_TYPES


@dataclass
class JobView:
    job: Job
    detail: queries.JobDetail
    charts: list[Chart]
    report: Markup | None
    plan: Markup | None
    gallery: list[Chart]  # charts the report's text does not show itself
    usage: dict[str, Any]
    timeline: list[tuple[datetime, str]]
    timings: list[tuple[str, str]]

    @property
    def active(self) -> bool:
        return self.job.status in ACTIVE_STATUSES


def figure_url(job_id: str, number: int) -> str:
    return f"/jobs/{job_id}/figures/{number}"


def charts_of(job: Job, figures: list[Figure]) -> list[Chart]:
    """The job's charts: the figures table, else the paths of the `figures` column (types from their suffix)."""
    if figures:
        return [Chart(f.number, f.mime_type, f.path, f.note) for f in figures]
    return [Chart(i, mimetypes.guess_type(p)[0], p, None) for i, p in enumerate(_paths(job.figures), 1)]


def _paths(raw: str | None) -> list[str]:
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(p) for p in value if isinstance(p, str)] if isinstance(value, list) else []


def job_view(settings: Settings, job: Job) -> JobView:
    detail = queries.detail(settings, job)
    charts = charts_of(job, detail.figures)
    by_name = {render.figure_key(c.path): c for c in charts if c.shown and c.path}
    used: set[int] = set()

    def image_source(src: str) -> str | None:
        chart = by_name.get(render.figure_key(src))
        if chart is None:
            return None
        used.add(chart.number)
        return figure_url(job.id, chart.number)

    report = render.to_html(job.report_markdown, image_source) if job.report_markdown else None
    plan = render.to_html(job.plan_markdown) if job.plan_markdown else None
    gallery = [c for c in charts if c.shown and c.number not in used]
    return JobView(job, detail, charts, report, plan, gallery, usage_of(job), timeline(job, detail), timings(job))


def usage_of(job: Job) -> dict[str, Any]:
    try:
        usage = json.loads(job.usage_json) if job.usage_json else {}
    except ValueError:
        usage = {}
    if not isinstance(usage, dict):
        usage = {}
    tokens = {"input_tokens": job.input_tokens, "output_tokens": job.output_tokens,
              "thought_tokens": job.thought_tokens, "total_tokens": job.total_tokens}  # fmt: skip
    return {**{k: v for k, v in tokens.items() if v is not None}, **usage}


def timeline(job: Job, detail: queries.JobDetail) -> list[tuple[datetime, str]]:
    """The job's history as far as the database knows it: creation, each create of its thread, the end."""
    events = [(job.created_at, "stored (queued)")]
    for turn in detail.turns:
        events.append(
            (turn.created_at, f"{turn.kind} sent" + (f" ({turn.interaction_id})" if turn.interaction_id else ""))
        )
    if job.submitted_at:
        events.append((job.submitted_at, "interaction created (running)"))
    if job.finished_at:
        events.append((job.finished_at, f"ended: {job.status}"))
    elif job.updated_at:
        events.append((job.updated_at, f"last change: {job.status}"))
    return sorted(events, key=lambda event: event[0])


def timings(job: Job) -> list[tuple[str, str]]:
    rows = []
    if job.submitted_at:
        rows.append(("waited in the queue", seconds(job.submitted_at, job.created_at)))
    end = job.finished_at or (utcnow() if job.status in ACTIVE_STATUSES else None)
    if job.submitted_at and end:
        rows.append(("researched" if job.finished_at else "researching for", seconds(end, job.submitted_at)))
    if end:
        rows.append(("in all", seconds(end, job.created_at)))
    return rows


def seconds(later: datetime, earlier: datetime) -> str:
    total = max(0, int((later - earlier).total_seconds()))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {secs:02d} s" if minutes else f"{secs} s")


def chart_bytes(settings: Settings, job: Job, number: int) -> tuple[bytes, str] | None:
    """A chart's bytes and type, from the figures table or, failing that, its file under the reports folder."""
    row = queries.figure(settings, job.id, number)
    chart = Chart(row.number, row.mime_type, row.path, row.note) if row else _listed(job, number)
    if chart is None or not chart.shown:
        return None
    if row is not None and row.data is not None:
        return row.data, str(chart.mime_type)
    data = _read_inside(settings.reports_dir, chart.path)
    return (data, str(chart.mime_type)) if data is not None else None


def _listed(job: Job, number: int) -> Chart | None:
    charts = charts_of(job, [])
    return charts[number - 1] if 0 < number <= len(charts) else None


def _read_inside(folder: Path, path: str | None) -> bytes | None:
    """A file's bytes only if it lies inside `folder`: a path in the database never reads anything else."""
    if not path:
        return None
    root = folder.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target.read_bytes()


def data_uri(data: bytes, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"
