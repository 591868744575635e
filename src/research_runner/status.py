"""A job's statuses, how the API's statuses map onto them, and the clock jobs are stamped with.

Plain Python, so commands that only read (`research list`, `status`) can use them without SQLAlchemy; the job
table itself is in models.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum


class JobStatus(StrEnum):
    """A job's status in our database (not the API's status, which is kept in `remote_status`)."""

    QUEUED = "queued"  # stored, interaction not created yet
    SUBMITTING = "submitting"  # a worker is creating the interaction right now
    RUNNING = "running"  # interaction exists and has not ended
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INCOMPLETE = "incomplete"
    BUDGET_EXCEEDED = "budget_exceeded"
    TIMED_OUT = "timed_out"  # ran past RESEARCH_MAX_RESEARCH_MINUTES; we cancelled it
    REQUIRES_ACTION = "requires_action"  # the agent waits for the user
    PLAN_READY = "plan_ready"  # collaborative planning: the agent's plan waits for `approve` or `revise`
    NEEDS_ATTENTION = "needs_attention"  # something we cannot resolve alone (unknown API status, lost create)


ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.RUNNING})
ATTENTION_STATUSES = frozenset({JobStatus.REQUIRES_ACTION, JobStatus.NEEDS_ATTENTION})
# Not over yet for a batch either: its digest waits for these too.
OPEN_STATUSES = ACTIVE_STATUSES | {JobStatus.PLAN_READY}
ENDED_STATUSES = frozenset(set(JobStatus) - ACTIVE_STATUSES)

# API statuses: running ones keep us polling, terminal ones map onto our own.
REMOTE_RUNNING = frozenset({"queued", "in_progress"})
REMOTE_TERMINAL: dict[str, JobStatus] = {
    "completed": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
    "incomplete": JobStatus.INCOMPLETE,
    "budget_exceeded": JobStatus.BUDGET_EXCEEDED,
    "requires_action": JobStatus.REQUIRES_ACTION,
}


def utcnow() -> datetime:
    return datetime.now(UTC)
