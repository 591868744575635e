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

# The shortest job or batch id prefix a command accepts.
MIN_ID_PREFIX = 4

# The newest migration under migrations/versions. Every command compares the database with it, and importing
# alembic to find it would cost every command ~0.1 s; tests/unit/test_cli_startup.py checks it is alembic's head.
SCHEMA_HEAD = "0007"
VERSION_TABLE = "alembic_version"  # alembic's default, which migrations/env.py keeps
SQLITE_BUSY_TIMEOUT_MS = 30_000  # how long an SQLite connection waits for another's write to end
