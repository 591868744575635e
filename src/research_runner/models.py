"""Database tables (SQLModel). The schema itself is owned by the alembic migrations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, LargeBinary, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlmodel import Column, Field, SQLModel

from research_runner.status import JobStatus, utcnow


def new_job_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite drops the zone on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _when(index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), index=index, nullable=True))


class Job(SQLModel, table=True):
    """One deep-research request and everything we learned about it."""

    __tablename__ = "jobs"

    id: str = Field(default_factory=new_job_id, primary_key=True, max_length=32)
    question: str = Field(sa_column=Column(Text, nullable=False))
    agent: str = Field(max_length=100)
    # A plain string column, not a database enum, so adding a status needs no type migration.
    status: str = Field(default=JobStatus.QUEUED, sa_column=Column(String(32), nullable=False, index=True))
    remote_status: str | None = Field(default=None, max_length=64)
    interaction_id: str | None = Field(default=None, max_length=255, index=True)
    retry_of: str | None = Field(default=None, max_length=32)
    idempotency_key: str | None = Field(default=None, max_length=200, unique=True, index=True)
    batch_id: str | None = Field(default=None, max_length=32, index=True)
    tags: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON list
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    submitted_at: datetime | None = _when()
    finished_at: datetime | None = _when()
    updated_at: datetime | None = _when()
    poll_count: int = 0
    next_poll_at: datetime | None = _when(index=True)
    # While set and in the future, a worker owns the job's next step; once it lapses any worker may take it.
    lease_until: datetime | None = _when()
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    last_thought: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    input_tokens: int | None = None
    output_tokens: int | None = None
    thought_tokens: int | None = None
    total_tokens: int | None = None
    report_title: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    report_path: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    report_markdown: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Set while a finished job's report file could not be written; the dispatch tick writes it later.
    report_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The API base URL that created the interaction: it is polled, cancelled and finished only through it.
    api_endpoint: str | None = Field(default=None, max_length=255)
    batch_position: int | None = None  # the item's place in its batch file
    # The agent_config sent on every create of this job (JSON), and what the next create of its thread sends.
    agent_config: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    next_input: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    previous_interaction_id: str | None = Field(default=None, max_length=255)
    parent_id: str | None = Field(default=None, max_length=32, index=True)  # the job a follow-up asks about
    plan_markdown: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    usage_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # the API's whole usage
    cost_usd: float | None = None  # estimated from usage and the price table
    figures: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON list of chart paths
    files: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON list of input files
    remote_deleted_at: datetime | None = _when()
    local_deleted_at: datetime | None = _when()

    @property
    def short_id(self) -> str:
        return self.id[:8]


class ApiBudget(SQLModel, table=True):
    """The API request budget shared by every worker: a per-minute counter and a pause after a 429."""

    __tablename__ = "api_budget"

    name: str = Field(primary_key=True, max_length=32)
    window_start: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    used: int = 0
    blocked_until: datetime | None = _when()


class Batch(SQLModel, table=True):
    """Jobs submitted together, from a file or a schedule's firing; its digest is written when all have ended."""

    __tablename__ = "batches"

    id: str = Field(default_factory=new_job_id, primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    source: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    schedule_id: str | None = Field(default=None, max_length=32)
    due_at: datetime | None = _when()
    job_count: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    finished_at: datetime | None = _when(index=True)
    digest_path: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    digest_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))

    @property
    def short_id(self) -> str:
        return self.id[:8]


class Schedule(SQLModel, table=True):
    """A cron schedule whose every due time creates one batch."""

    __tablename__ = "schedules"

    id: str = Field(default_factory=new_job_id, primary_key=True, max_length=32)
    name: str = Field(max_length=100, unique=True)
    cron: str = Field(max_length=100)
    timezone: str = Field(max_length=64)
    agent: str = Field(max_length=100)
    items: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of batch items
    paused: bool = False
    catch_up: bool = True
    next_run_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    last_run_at: datetime | None = _when()
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    failures: int = 0  # firings that failed in a row; the schedule is paused after a few
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class JobTurn(SQLModel, table=True):
    """One create in a job's thread (the research, a plan, a revision, an approval): every interaction it used."""

    __tablename__ = "job_turns"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=32, index=True)
    kind: str = Field(max_length=16)  # research, plan, revise, approve, follow_up
    input: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    interaction_id: str | None = Field(default=None, max_length=255)
    api_endpoint: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class JobFile(SQLModel, table=True):
    """A file sent with a job's question (image or PDF): kept so any worker can send it."""

    __tablename__ = "job_files"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=32, index=True)
    position: int
    name: str = Field(sa_column=Column(Text, nullable=False))
    mime_type: str = Field(max_length=100)
    size: int
    sha256: str = Field(max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Figure(SQLModel, table=True):
    """A chart of a report: its bytes (written beside the report) or, for a broken one, why it was skipped."""

    __tablename__ = "figures"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=32, index=True)
    number: int
    mime_type: str | None = Field(default=None, max_length=100)
    data: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    path: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class WebhookDelivery(SQLModel, table=True):
    """A verified webhook delivery, kept once per `webhook-id` so retries and duplicates are recognised."""

    __tablename__ = "webhook_deliveries"

    webhook_id: str = Field(primary_key=True, max_length=255)
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    event_type: str | None = Field(default=None, max_length=64)
    interaction_id: str | None = Field(default=None, max_length=255)
    job_id: str | None = Field(default=None, max_length=32)
    outcome: str = Field(max_length=16)  # due (a poll was made due), ignored (unknown or ended job)


class WebhookSecret(SQLModel, table=True):
    """A static webhook's signing secret (`whsec_...`), shared by every receiver through the database."""

    __tablename__ = "webhook_secrets"

    id: int | None = Field(default=None, primary_key=True)
    webhook_name: str = Field(max_length=255, index=True)  # the API's webhook id
    uri: str = Field(sa_column=Column(Text, nullable=False))
    secret: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    # A rotated-out secret still verifies until then (the API signs with both for a while); None: current.
    expires_at: datetime | None = _when()
