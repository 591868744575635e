"""Deleting what a job left behind: its interactions at Google, its local files, or both.

Google keeps interactions for 55 days on the paid tier (1 day on the free tier); `interactions.delete` removes
one sooner. Locally a job leaves its report, its charts and the report's text in the row. The row itself stays,
and remembers what was deleted and when.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from research_runner import charts, lifecycle, reports, store
from research_runner.exceptions import InvalidJobState
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.status import ACTIVE_STATUSES, utcnow

if TYPE_CHECKING:
    from research_runner.gateway import Gateway


@dataclass(frozen=True)
class Deleted:
    """What one delete did: the interactions removed at Google and the local files removed."""

    job: Job
    interactions: list[str]
    files: list[Path]


def interactions_of(settings: Settings, job: Job) -> list[str]:
    """Every interaction the job's thread used, oldest first."""
    ids = [turn.interaction_id for turn in store.turns_of(settings, job.id) if turn.interaction_id]
    if job.interaction_id and job.interaction_id not in ids:
        ids.append(job.interaction_id)
    return ids


def local_files(settings: Settings, job: Job) -> list[Path]:
    """The report and chart files of the job that exist."""
    found = [Path(job.report_path)] if job.report_path else []
    found += [Path(p) for p in json.loads(job.figures or "[]")]
    return [path for path in found if path.exists()]


def delete(settings: Settings, job: Job, gateway: Callable[[], Gateway], *, remote: bool, local: bool) -> Deleted:
    if job.status in ACTIVE_STATUSES:
        raise InvalidJobState(f"job {job.short_id} is {job.status}; cancel it first (`research cancel {job.short_id}`)")
    removed = _delete_remote(settings, job, gateway) if remote else []
    files = _delete_local(settings, job) if local else []
    now = utcnow()
    values: dict[str, datetime | None] = {}
    if remote:
        values["remote_deleted_at"] = now
    if local:
        values["local_deleted_at"] = now
    store.transition(settings, job.id, [job.status], **values, **(_forgotten() if local else {}))
    return Deleted(lifecycle.reload(settings, job.id), removed, files)


def _delete_remote(settings: Settings, job: Job, gateway: Callable[[], Gateway]) -> list[str]:
    ids = interactions_of(settings, job)
    if not ids:
        return []
    api = gateway()
    if job.api_endpoint not in (None, api.endpoint):
        raise InvalidJobState(f"job {job.short_id}'s interactions live at {job.api_endpoint}, not at "
                              f"{api.endpoint}; point RESEARCH_GEMINI_BASE_URL there to delete them")  # fmt: skip
    return [interaction for interaction in ids if api.delete(interaction)]


def _delete_local(settings: Settings, job: Job) -> list[Path]:
    files = local_files(settings, job)
    for path in files:
        path.unlink(missing_ok=True)
    folder = settings.reports_dir / charts.folder_of(reports.report_filename(job))
    if folder.is_dir() and not any(folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)
    store.forget_figures(settings, job.id)
    return files


def _forgotten() -> dict[str, None]:
    # The text of the report and plan goes with the files: a user who deletes them wants them gone.
    return {"report_path": None, "report_markdown": None, "plan_markdown": None, "figures": None,
            "report_error": None}  # fmt: skip


def purge_candidates(settings: Settings, before: datetime, *, remote: bool, local: bool) -> list[Job]:
    """Ended jobs finished before `before` that still have something of the kind to delete."""
    return [
        job
        for job in store.ended_before(settings, before)
        if (remote and job.remote_deleted_at is None and job.interaction_id)
        or (local and job.local_deleted_at is None and (job.report_path or job.report_markdown))
    ]
