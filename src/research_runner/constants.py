"""Limits and names of the product that more than one module relies on, named once.

The job's statuses live with the job model (models.py); queue and task names with the worker (worker.py).
"""

from __future__ import annotations

# The deep-research agents, default first (Google's docs, agent_config table).
AGENTS: tuple[str, ...] = (
    "deep-research-preview-04-2026",
    "deep-research-max-preview-04-2026",
    "deep-research-pro-preview-12-2025",
)
DEFAULT_AGENT = AGENTS[0]

MAX_QUESTION_CHARS = 8000
IDEMPOTENCY_KEY_MAX_CHARS = 200
# The label set on every create: it names the job an interaction belongs to.
JOB_LABEL = "research_runner_job"
