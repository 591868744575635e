"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL, and 0004 goes both ways."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from research_runner import db
from research_runner.settings import load_settings
from research_runner.web.search import include_object


def differences(url: str) -> list[Any]:
    with db.get_engine(url).connect() as conn:
        # The full-text index of 0007 is not in the models; env.py leaves it out the same way.
        context = MigrationContext.configure(conn, opts={"include_object": include_object})
        return list(compare_metadata(context, SQLModel.metadata))


def job_columns(url: str) -> set[str]:
    return {column["name"] for column in sa.inspect(db.get_engine(url)).get_columns("jobs")}


def test_sqlite_schema_matches_the_models(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path))
    assert db.upgrade(settings) == (None, "0007")
    assert differences(settings.database_url) == []
    assert "batch_position" in job_columns(settings.database_url)


def test_postgres_schema_matches_the_models(postgres_settings_env: dict[str, str]) -> None:
    url = load_settings(database_url=postgres_settings_env["RESEARCH_DATABASE_URL"]).database_url
    assert differences(url) == []
    assert "batch_position" in job_columns(url)


def test_batch_position_goes_down_and_up_keeping_the_jobs(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path))
    db.upgrade(settings)
    engine = db.get_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO jobs (id, question, agent, status, created_at, poll_count, batch_position) "
                "VALUES ('a1', 'Why?', 'deep-research-preview-04-2026', 'queued', '2026-11-26 10:00:00', 0, 2)"
            )
        )
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(resources.files("research_runner") / "migrations"))
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    assert "batch_position" not in job_columns(settings.database_url)
    db.upgrade(settings)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, batch_position FROM jobs")).all() == [("a1", None)]
