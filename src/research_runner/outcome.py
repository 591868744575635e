"""How an interaction ended, stored once: the row, guarded by status, then the report and its charts on disk,
written only by the finisher whose transition applied.

A report that cannot be written (folder read-only or full) never costs the outcome: the row keeps the report,
its charts and the reason, polling stops, and the dispatch tick writes the files once it can.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from research_runner import charts, pricing, reports, store
from research_runner.models import Figure, Job
from research_runner.settings import Settings
from research_runner.snapshot import Snapshot
from research_runner.status import ACTIVE_STATUSES, REMOTE_TERMINAL, JobStatus, utcnow

log = logging.getLogger(__name__)


def finish(settings: Settings, job: Job, snapshot: Snapshot, from_statuses: Iterable[str] = ACTIVE_STATUSES) -> None:
    """Store the outcome once: the row, then (only by the finisher whose transition applied, in its transaction)
    the files, written atomically, and their charts."""
    finished_at = utcnow()
    status = REMOTE_TERMINAL[snapshot.status]
    # A running job's cost so far is its plans', which were billed too: the estimate covers the whole thread. One
    # ended already (requires_action) has this interaction's own estimate, which must not count twice.
    earlier = job.cost_usd if job.status in ACTIVE_STATUSES else None
    cost = pricing.plus(earlier, pricing.estimate(settings.prices.get(job.agent), snapshot.usage, snapshot.searches))
    report = reports.render(job, snapshot, finished_at, cost) if snapshot.text.strip() else None
    saved: list[Path] = []
    won = store.finish(
        settings, job.id, from_statuses, lambda: _save(settings, job, report, saved),
        status=status, remote_status=snapshot.status, finished_at=finished_at, next_poll_at=None,
        lease_until=None, error=_outcome_error(status, snapshot), poll_count=job.poll_count + 1,
        last_thought=snapshot.last_thought or job.last_thought,
        report_title=report.title if report else None, report_markdown=report.markdown if report else None,
        usage_json=json.dumps(snapshot.usage) if snapshot.usage else None, cost_usd=cost,
        **_usage_columns(snapshot),
    )  # fmt: skip
    if won and job.parent_id and saved:
        _link_from_parent(settings, job, saved[0])


def _link_from_parent(settings: Settings, job: Job, path: Path) -> None:
    """A follow-up's report is linked from its parent's report (file and row)."""

    def linked(parent: Job) -> str | None:
        if not parent.report_markdown:
            return None
        where = Path(parent.report_path).parent if parent.report_path else settings.reports_dir
        markdown = reports.with_follow_up(parent.report_markdown, job.question, os.path.relpath(path, where))
        if parent.report_path:
            try:
                reports.write_atomically(Path(parent.report_path), markdown)
            except OSError as exc:  # the row has the link; the file gets it with the next follow-up
                log.warning("job %s: follow-up %s not linked in its file: %s", parent.short_id, job.short_id, exc)
        return markdown

    store.revise_report(settings, job.parent_id or "", linked)


def _figures(job: Job, report: reports.Report | None) -> list[Figure]:
    found = report.charts if report else ()
    return [Figure(job_id=job.id, number=c.number, mime_type=c.mime_type, data=c.data, note=c.note) for c in found]


def _save(settings: Settings, job: Job, report: reports.Report | None, saved: list[Path]) -> store.Saved:
    """Write the report and its charts; the row's columns for them, and the chart rows. `saved` gets the path."""
    nothing: dict[str, Any] = {"report_path": None, "report_error": None, "figures": None}
    if report is None:
        return nothing, []
    try:
        path, written = reports.save(report, settings.reports_dir)
    except OSError as exc:
        log.error("job %s: report not written: %s", job.id[:8], exc)
        return nothing | {"report_error": _unwritten(settings, exc)}, _figures(job, report)
    saved.append(path)
    figures = json.dumps([str(p) for p in written]) if written else None
    return {"report_path": str(path), "report_error": None, "figures": figures}, _figures(job, report)


def _unwritten(settings: Settings, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"report not written: {reason} in {settings.reports_dir}; kept in the database, written once it can be"


def write_pending_reports(settings: Settings) -> int:
    """Write the reports (and charts) that could not be written when their jobs finished; returns how many."""
    written = 0
    for job in store.unwritten_reports(settings):
        written += _write_pending(settings, job)
    return written


def _write_pending(settings: Settings, job: Job) -> int:
    assert job.report_markdown is not None
    filename = reports.report_filename(job)
    found = [charts.Chart(f.number, f.mime_type, f.data, f.note) for f in store.figures_of(settings, job.id)]
    path = settings.reports_dir / filename
    try:
        chart_paths = reports.write_charts(found, settings.reports_dir / charts.folder_of(filename))
        reports.write_atomically(path, job.report_markdown)
    except OSError as exc:
        if _unwritten(settings, exc) != job.report_error:
            store.transition(settings, job.id, [job.status], report_error=_unwritten(settings, exc))
        return 0
    figures = json.dumps([str(p) for p in chart_paths]) if chart_paths else None
    return int(store.transition(settings, job.id, [job.status], report_path=str(path), report_error=None,
                                figures=figures))  # fmt: skip


def _outcome_error(status: JobStatus, snapshot: Snapshot) -> str | None:
    if status == JobStatus.COMPLETED:
        return None
    if status == JobStatus.REQUIRES_ACTION:
        return "the agent is waiting for input from you (requires_action)"
    return "; ".join(snapshot.errors) or f"the interaction ended {status.value}"


def _usage_columns(snapshot: Snapshot) -> dict[str, int | None]:
    usage = snapshot.usage
    return {
        "input_tokens": usage.get("total_input_tokens"),
        "output_tokens": usage.get("total_output_tokens"),
        "thought_tokens": usage.get("total_thought_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }
