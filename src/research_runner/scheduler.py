"""Celery beat wiring: the periodic tick that hands out due polls.

The tick is safe to run from several beats at once: claiming a due job is one conditional UPDATE, so a second
dispatcher finds nothing left to claim.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from research_runner.config import Settings
from research_runner.constants import TASK_DISPATCH

# In-memory schedule: beat keeps no shelve file, so several embedded beats never fight over one.
BEAT_SCHEDULER = "celery.beat:Scheduler"


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "dispatch-due-jobs": {
            "task": TASK_DISPATCH,
            "schedule": settings.dispatch_interval,
            # A tick that waited in the broker longer than a few intervals is stale: the next one does its work.
            "options": {"expires": settings.dispatch_interval * 5},
        }
    }


def run_beat(app: Celery, loglevel: str = "INFO") -> None:
    app.start(["beat", f"--scheduler={BEAT_SCHEDULER}", f"--loglevel={loglevel}"])
