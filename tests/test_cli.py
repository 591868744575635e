"""The CLI's exact output on success and error paths; every error leaves the database as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from research_runner import db
from research_runner.cli import cli
from research_runner.constants import AGENTS, MAX_QUESTION_CHARS
from research_runner.settings import load_settings


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def table_dump(env: dict[str, str]) -> list[tuple[Any, ...]]:
    settings = load_settings(data_dir=env["RESEARCH_DATA_DIR"], database_url=env.get("RESEARCH_DATABASE_URL"))
    db.ensure_schema(settings)
    with db.get_engine(settings.database_url).connect() as conn:
        return [tuple(row) for row in conn.execute(text("SELECT * FROM jobs ORDER BY id"))]


@pytest.fixture
def finished_job(runner_env: dict[str, str]) -> str:
    result = invoke(runner_env, "run", "--json", "--no-emulator", "Done already? [[emulator duration=0.2]]")
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["id"])


BAD_INPUTS = [
    (["submit", "   "], 2, "Error: the question is empty; pass the research question as text"),
    (
        ["submit", "x" * (MAX_QUESTION_CHARS + 1)],
        2,
        f"Error: the question is {MAX_QUESTION_CHARS + 1} characters long; the limit is {MAX_QUESTION_CHARS}",
    ),
    (
        ["submit", "--agent", "deep-thought", "Why?"],
        2,
        f"Error: unknown agent 'deep-thought'; choose one of: {', '.join(AGENTS)}",
    ),
    (
        ["run", "--agent", "deep-thought", "Why?"],
        2,
        f"Error: unknown agent 'deep-thought'; choose one of: {', '.join(AGENTS)}",
    ),
    (["status", "abcd1234"], 1, "Error: no job with id 'abcd1234'; `research list` shows the jobs"),
    (["show", "abcd1234"], 1, "Error: no job with id 'abcd1234'; `research list` shows the jobs"),
    (["cancel", "abc"], 2, "Error: job id 'abc' is too short; give at least 4 characters"),
    (["submit"], 2, "Error: Missing argument 'QUESTION'. (see `research submit --help`)"),
    (
        ["list", "--status", "sleeping"],
        2,
        "Error: Invalid value for '--status': 'sleeping' is not one of 'queued', 'submitting', 'running', "
        "'completed', 'failed', 'cancelled', 'incomplete', 'budget_exceeded', 'timed_out', 'requires_action', "
        "'plan_ready', 'needs_attention'. (see `research list --help`)",
    ),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUTS, ids=lambda v: str(v)[:30])
def test_bad_input_is_one_line_and_changes_nothing(
    runner_env: dict[str, str], finished_job: str, args: list[str], code: int, message: str
) -> None:
    before = table_dump(runner_env)
    result = invoke(runner_env, *args)
    assert (result.exit_code, result.stderr, result.stdout) == (code, message + "\n", "")
    assert table_dump(runner_env) == before


def test_cancelling_a_finished_job_is_refused(runner_env: dict[str, str], finished_job: str) -> None:
    before = table_dump(runner_env)
    result = invoke(runner_env, "cancel", finished_job[:8])
    assert result.exit_code == 1
    assert result.stderr == f"Error: job {finished_job[:8]} has already ended (completed); there is nothing to cancel\n"
    assert table_dump(runner_env) == before


def test_retrying_a_completed_job_is_refused(runner_env: dict[str, str], finished_job: str) -> None:
    result = invoke(runner_env, "retry", finished_job)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: job {finished_job[:8]} is completed; only jobs that ended without completing can be retried\n"
    )


def test_unreachable_broker_stores_nothing(runner_env: dict[str, str]) -> None:
    env = {**runner_env, "RESEARCH_BROKER_URL": "redis://127.0.0.1:1/0"}
    before = table_dump(env)
    result = invoke(env, "submit", "Will this be stored?")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot reach the broker at redis://127.0.0.1:1/0 (")
    assert result.stderr.endswith("); check RESEARCH_BROKER_URL and that the broker is running\n")
    assert result.stderr.count("\n") == 1
    assert table_dump(env) == before == []


def test_unreachable_database_is_one_line(runner_env: dict[str, str]) -> None:
    env = {**runner_env, "RESEARCH_DATABASE_URL": "postgresql://user:hunter2@127.0.0.1:1/research"}
    result = invoke(env, "list")
    assert result.exit_code == 1
    redacted = "postgresql+psycopg://user:***@127.0.0.1:1/research"
    assert result.stderr.startswith(f"Error: cannot use the database at {redacted} (")
    assert "hunter2" not in result.output and result.stderr.count("\n") == 1


def test_submit_needs_no_api_key_only_the_worker_does(runner_env: dict[str, str]) -> None:
    env = {**runner_env, "GEMINI_API_KEY": ""}
    result = invoke(env, "submit", "--json", "Who pays for this?")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "queued"
    worker = invoke(env, "worker")
    assert (worker.exit_code, worker.stderr) == (
        2,
        "Error: no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY); a worker calls the API\n",
    )


def test_an_old_schema_is_reported_not_migrated(runner_env: dict[str, str]) -> None:
    table_dump(runner_env)  # creates the schema
    settings = load_settings(data_dir=runner_env["RESEARCH_DATA_DIR"])
    with db.get_engine(settings.database_url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    result = invoke(runner_env, "list")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: the database schema is at revision 0000 but this version needs 0007; run `research db upgrade`\n"
    )


def test_db_upgrade_reports_the_revision(runner_env: dict[str, str]) -> None:
    result = invoke(runner_env, "db", "upgrade")
    assert (result.exit_code, result.stdout) == (0, "Database schema at revision 0007 (was empty)\n")
    result = invoke(runner_env, "db", "upgrade")
    assert (result.exit_code, result.stdout) == (0, "Database schema at revision 0007\n")


def test_submit_status_list_show_on_success(runner_env: dict[str, str], finished_job: str) -> None:
    status = json.loads(invoke(runner_env, "status", "--json", finished_job[:6]).stdout)
    assert status["id"] == finished_job and status["status"] == "completed"
    assert set(status) >= {"id", "status", "question", "agent", "interaction_id", "report_path", "error"}
    listed = json.loads(invoke(runner_env, "list", "--json", "--status", "completed").stdout)
    assert [job["id"] for job in listed] == [finished_job]
    card = invoke(runner_env, "status", finished_job).stdout
    assert card.splitlines()[:2] == [f"id:             {finished_job}", "status:         completed"]
    raw = invoke(runner_env, "show", "--raw", finished_job).stdout
    with open(status["report_path"], encoding="utf-8") as handle:
        assert raw == handle.read()
    shown = invoke(runner_env, "show", finished_job)
    assert shown.exit_code == 0 and "Sources" in shown.stdout and "job_id:" not in shown.stdout
    table = invoke(runner_env, "list").stdout.splitlines()
    assert table[0].split() == ["ID", "STATUS", "AGE", "QUESTION"]
    assert table[1].startswith(f"{finished_job[:8]}  completed")
    assert "Done already? [[emulator duration=0.2]]" in table[1], "questions are shown as text, not markup"


def test_submit_prints_the_job_id(runner_env: dict[str, str], redis_url: str) -> None:
    env = {**runner_env, "RESEARCH_BROKER_URL": redis_url}
    result = invoke(env, "submit", "  How are  glaciers measured?  ")
    assert result.exit_code == 0, result.output
    short = result.stdout.split()[2].rstrip(":")
    assert result.stdout == f"Submitted job {short}: How are glaciers measured?\n"
    listed = json.loads(invoke(env, "list", "--json").stdout)
    assert [(job["id"][:8], job["status"], job["question"]) for job in listed] == [
        (short, "queued", "How are  glaciers measured?")
    ]


def test_a_password_with_escapes_is_redacted_not_interpolated(runner_env: dict[str, str]) -> None:
    env = {**runner_env, "RESEARCH_DATABASE_URL": "postgresql://user:p%40ss%25w@127.0.0.1:1/research"}
    result = invoke(env, "db", "upgrade")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "Error: cannot use the database at postgresql+psycopg://user:***@127.0.0.1:1/research"
    )
    assert "p%40ss" not in result.output and "p@ss" not in result.output


def test_a_malformed_database_url_is_bad_usage(runner_env: dict[str, str]) -> None:
    result = invoke({**runner_env, "RESEARCH_DATABASE_URL": "nosuchdb://somewhere/x"}, "list")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: invalid RESEARCH_DATABASE_URL 'nosuchdb://somewhere/x' (")
    assert result.stderr.count("\n") == 1
