"""`research list` and `status` read through readonly.py (plain DB-API) when they can: on SQLite and on
PostgreSQL they must show exactly what the ORM path shows, and hand over to it when the database is not ready."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from research_runner import db, display, store
from research_runner.constants import DEFAULT_AGENT, SCHEMA_HEAD
from research_runner.models import Job, JobTurn
from research_runner.readonly import JobRow, TurnRow, open_reader
from research_runner.settings import Settings, load_settings
from research_runner.status import JobStatus

MOMENT = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)  # the night Europe moves its clocks


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    # On PostgreSQL, the session's shared database with its tables emptied (conftest's postgres_settings_env).
    env = request.getfixturevalue("postgres_settings_env") if request.param == "postgresql" else {}
    settings = load_settings(data_dir=tmp_path, reports_dir=tmp_path / "reports",
                             database_url=env.get("RESEARCH_DATABASE_URL"))  # fmt: skip
    db.ensure_schema(settings)
    yield settings
    with db.session(settings) as session:  # as the other tests expect it, whatever this one did to it
        session.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": SCHEMA_HEAD})


def full_job(settings: Settings, question: str, created_at: datetime) -> Job:
    """A job with every column set, so a column the reader drops or misreads changes what is shown."""
    job = store.new_job(settings, question, DEFAULT_AGENT)
    values = {"status": JobStatus.COMPLETED, "remote_status": "completed", "interaction_id": "v1_abc",
              "tags": '["a", "b"]', "created_at": created_at, "submitted_at": created_at + timedelta(seconds=2),
              "finished_at": created_at + timedelta(minutes=12), "updated_at": MOMENT, "poll_count": 7,
              "next_poll_at": MOMENT, "lease_until": MOMENT, "error": "none", "last_thought": "Reading [sources]",
              "input_tokens": 10, "output_tokens": 20, "thought_tokens": 30, "total_tokens": 60,
              "report_title": "Title", "report_path": "/r/x.md", "report_markdown": "# Title\n\nBody",
              "report_error": None, "api_endpoint": "http://127.0.0.1:1", "batch_position": 3,
              "cost_usd": 1.25, "figures": '["f.png"]', "files": '[{"name": "a.pdf"}]',
              "usage_json": '{"total_tokens": 60}', "plan_markdown": "plan", "parent_id": None,
              "remote_deleted_at": MOMENT, "local_deleted_at": None}  # fmt: skip
    for name, value in values.items():
        setattr(job, name, value)
    return store.add(settings, job)


def test_job_row_has_every_column_of_the_job_table() -> None:
    assert [field.name for field in dataclasses.fields(JobRow)] == list(Job.model_fields)
    assert {field.name for field in dataclasses.fields(TurnRow)} <= set(JobTurn.model_fields)


def test_reader_shows_what_the_orm_shows(settings: Settings) -> None:
    older = full_job(settings, "Older question?", MOMENT)
    newer = full_job(settings, "Newer question?", MOMENT + timedelta(hours=1))
    store.add_turn(settings, JobTurn(job_id=newer.id, kind="research", interaction_id="v1_abc", created_at=MOMENT))
    with open_reader(settings) as reader:
        assert reader is not None
        row = reader.find(newer.id[:6].upper())
        listed = reader.list_jobs(None, 10)
        completed = reader.list_jobs("completed", 1)
        turns = reader.turns(newer.id)
    model = store.find(settings, newer.id)
    assert display.job_dict(row) == display.job_dict(model)
    assert display.status_card(row) == display.status_card(model)
    assert row.created_at == MOMENT + timedelta(hours=1) and row.created_at.tzinfo == UTC
    assert [job.id for job in listed] == [job.id for job in store.list_jobs(settings)] == [newer.id, older.id]
    assert [job.id for job in completed] == [newer.id]
    orm_turns = store.turns_of(settings, newer.id)
    assert [(t.kind, t.interaction_id, t.created_at) for t in turns] == [
        (t.kind, t.interaction_id, t.created_at) for t in orm_turns
    ]


def test_reader_refuses_a_database_it_cannot_trust(settings: Settings) -> None:
    with db.session(settings) as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    with open_reader(settings) as reader:
        assert reader is None  # the Client's path then says `research db upgrade`


def test_reader_leaves_a_new_database_to_the_full_path(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "new", reports_dir=tmp_path / "reports")
    with open_reader(settings) as reader:
        assert reader is None
    assert not (tmp_path / "new" / "research.db").exists()  # and it created nothing on the way
