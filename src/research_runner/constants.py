"""Names and limits that more than one module relies on, named once."""

from __future__ import annotations

from enum import StrEnum

AGENTS: tuple[str, ...] = (
    "deep-research-preview-04-2026",
    "deep-research-max-preview-04-2026",
    "deep-research-pro-preview-12-2025",
)
DEFAULT_AGENT = AGENTS[0]

MAX_QUESTION_CHARS = 8000

TASK_SUBMIT = "research.submit"
TASK_POLL = "research.poll"
TASK_DISPATCH = "research.dispatch"

WORK_QUEUE = "research"  # creates, and anything sent without a route
# Workers read their queues in this order (on Redis): ticks never wait (and expire) behind the steps they hand
# out, and polls, due now and quick, never wait behind a burst of creates.
DISPATCH_QUEUE = "research.dispatch"
POLL_QUEUE = "research.poll"
QUEUES_BY_PRIORITY = (DISPATCH_QUEUE, POLL_QUEUE, WORK_QUEUE)

# Jobs stepped (created or polled) by one message: fewer messages cost the worker less, and a message's API
# calls overlap on the worker process's threads.
JOBS_PER_MESSAGE = 8

API_BUDGET_NAME = "gemini"
IDEMPOTENCY_KEY_MAX_CHARS = 200


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
    NEEDS_ATTENTION = "needs_attention"  # something we cannot resolve alone (unknown API status, lost create)


ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.RUNNING})
ATTENTION_STATUSES = frozenset({JobStatus.REQUIRES_ACTION, JobStatus.NEEDS_ATTENTION})
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
