"""The full-text index on SQLite (FTS5) and PostgreSQL (tsvector + GIN): kept in step by the database when a job
is stored, its report written, changed or deleted; ranked; safe with any query text; backfilled by 0007."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import delete, update
from sqlmodel import col

from research_runner import db, store
from research_runner.constants import DEFAULT_AGENT
from research_runner.models import Job
from research_runner.settings import Settings, load_settings
from research_runner.web.search import search

FRONT = "---\ntitle: t\nquestion: q\nstatus: completed\n---\n\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        found = load_settings(data_dir=str(tmp_path))
        db.upgrade(found)
        yield found
        return
    env = request.getfixturevalue("postgres_settings_env")
    yield load_settings(database_url=env["RESEARCH_DATABASE_URL"], data_dir=str(tmp_path))


def stored(settings: Settings, question: str, report: str | None = None) -> Job:
    job = store.add(settings, store.new_job(settings, question, DEFAULT_AGENT, held=False))
    if report is not None:
        set_report(settings, job.id, report)
    return job


def set_report(settings: Settings, job_id: str, report: str) -> None:
    with db.session(settings) as session:
        session.execute(update(Job).where(col(Job.id) == job_id).values(report_markdown=report, status="completed"))


def found(settings: Settings, text: str) -> list[str]:
    return [hit.job_id for hit in search(settings, text).hits]


def test_the_index_follows_every_write(settings: Settings) -> None:
    job = stored(settings, "How do heat pumps cope with very cold winters?")
    assert found(settings, "winter") == [job.id]  # stemmed: "winters" is found by "winter"
    assert found(settings, "defrost") == []
    set_report(settings, job.id, FRONT + "# Heat pumps\n\nThe defrosting cycle matters most.\n")
    assert found(settings, "defrost") == [job.id]
    assert found(settings, "status completed") == [], "the front matter is not indexed"
    set_report(settings, job.id, FRONT + "# Heat pumps\n\nRewritten about refrigerants.\n")
    assert found(settings, "defrost") == [] and found(settings, "refrigerant") == [job.id]
    with db.session(settings) as session:
        session.execute(delete(Job).where(col(Job.id) == job.id))
    assert found(settings, "refrigerant") == []


def test_results_are_ranked_and_snippets_highlighted(settings: Settings) -> None:
    body_once = stored(settings, "Grid storage overview", FRONT + "Batteries aside, pumped hydro still leads.\n")
    in_question = stored(settings, "Why is pumped hydro storage cheap?", FRONT + "Hydro reservoirs, pumped.\n")
    unrelated = stored(settings, "Solar panel recycling", FRONT + "Silicon and silver recovery.\n")
    results = search(settings, "pumped hydro")
    assert [hit.job_id for hit in results.hits] == [in_question.id, body_once.id]
    assert results.total == 2 and unrelated.id not in found(settings, "hydro")
    assert all("<mark>" in hit.snippet for hit in results.hits)
    assert found(settings, '"hydro still leads"') == [body_once.id]
    assert found(settings, '"leads still hydro"') == []


@pytest.mark.parametrize(
    "query", ['"', "*", "NEAR(", "a AND", "-", "OR OR", "'; DROP TABLE jobs; --", "question:x", "{report}", "^x"]
)
def test_any_query_text_is_safe(settings: Settings, query: str) -> None:
    stored(settings, "A question about question marks and tables", FRONT + "Some x report drop text.\n")
    search(settings, query)  # no syntax error, whatever the text
    assert len(found(settings, "tables")) == 1


def test_hostile_text_in_snippets_is_escaped(settings: Settings) -> None:
    stored(settings, "Markup safety", FRONT + "A <script>alert('zork')</script> zork here.\n")
    snippet = str(search(settings, "zork").hits[0].snippet)
    assert ("<script>" not in snippet and "&lt;script&gt;" in snippet) or "script" not in snippet
    assert "<mark>zork</mark>" in snippet


def test_upgrading_to_0007_indexes_the_reports_already_stored(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path))
    engine = db.get_engine(settings.database_url)
    config = Config()
    config.set_main_option("script_location", str(resources.files("research_runner") / "migrations"))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
        conn.execute(
            sa.text(
                "INSERT INTO jobs (id, question, agent, status, created_at, poll_count, report_markdown) VALUES "
                "('a1', 'Old question', 'deep-research-preview-04-2026', 'completed', '2026-11-26 10:00:00', 0, "
                ":report)"
            ),
            {"report": FRONT + "An older report about quokkas.\n"},
        )
    assert db.upgrade(settings) == ("0005", "0007")
    assert found(settings, "quokka") == ["a1"]
