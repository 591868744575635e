"""What a new user hit in a day with the CLI (issue 14): each case through the real CLI and storage."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from research_runner import db, store
from research_runner.cli import cli
from research_runner.client import Client
from research_runner.exceptions import InvalidInput
from research_runner.settings import load_settings

from conftest import settings_from, wait_for


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def finished_job(runner_env: dict[str, str]) -> str:
    result = invoke(runner_env, "run", "--json", "--no-emulator", "Piped? [[emulator duration=0.2]]")
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["id"])


def test_show_piped_keeps_every_source_url_and_pads_nothing(runner_env: dict[str, str], finished_job: str) -> None:
    shown = invoke(runner_env, "show", finished_job).stdout
    sources = shown.split("## Sources", 1)[1]
    assert sources.count("https://") >= 3, "each source's URL is readable in a pipe"
    assert all(line == line.rstrip() for line in shown.splitlines()), "no padding to a terminal's width"


def test_report_files_are_readable_like_any_file_the_user_writes(runner_env: dict[str, str], finished_job: str) -> None:
    path = Path(json.loads(invoke(runner_env, "status", "--json", finished_job).stdout)["report_path"])
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_status_json_says_the_job_was_emulated(runner_env: dict[str, str], finished_job: str) -> None:
    shown = json.loads(invoke(runner_env, "status", "--json", finished_job).stdout)
    assert shown["emulated"] is True and shown["api_endpoint"] == runner_env["RESEARCH_GEMINI_BASE_URL"]


def test_an_unexpected_error_is_one_line_naming_where_the_traceback_went(
    runner_env: dict[str, str], finished_job: str
) -> None:
    settings = load_settings(data_dir=runner_env["RESEARCH_DATA_DIR"])
    with db.get_engine(settings.database_url).begin() as conn:  # a row a future version wrote, say
        conn.execute(text("UPDATE jobs SET tags = '{not json'"))
    run = subprocess.run(
        [sys.executable, "-m", "research_runner", "status", "--json", finished_job],
        env={**os.environ, **runner_env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1 and run.stdout == ""
    line = run.stderr.strip()
    assert "\n" not in line and line.startswith("Error: unexpected JSONDecodeError: ")
    logged = Path(line.rsplit("full traceback in ", 1)[1].rstrip(")"))
    assert "Traceback (most recent call last)" in logged.read_text()


def test_plain_research_prints_help_without_an_error(runner_env: dict[str, str]) -> None:
    run = subprocess.run([sys.executable, "-m", "research_runner"], env={**os.environ, **runner_env},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0 and "Usage: research" in run.stdout and "Error" not in run.stderr


def test_every_command_group_help_has_an_example(runner_env: dict[str, str]) -> None:
    for group in ("batch", "schedule", "db", "webhooks"):
        result = invoke(runner_env, group, "--help")
        assert result.exit_code == 0 and "Example:" in result.stdout, group


def test_folders_are_the_same_from_any_current_directory(tmp_path: Path, runner_env: dict[str, str]) -> None:
    env = {
        k: v for k, v in {**os.environ, **runner_env}.items() if k not in ("RESEARCH_DATA_DIR", "RESEARCH_REPORTS_DIR")
    }
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    seen = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        run = subprocess.run([sys.executable, "-m", "research_runner", "submit", "--json", f"From {folder}"],
                             env=env, cwd=tmp_path / folder, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert run.returncode == 0, run.stderr
        listed = subprocess.run([sys.executable, "-m", "research_runner", "list", "--json"], env=env,
                                cwd=tmp_path / folder, capture_output=True, text=True, timeout=60)  # fmt: skip
        seen.append({job["question"] for job in json.loads(listed.stdout)})
    assert seen == [{"From a"}, {"From a", "From b"}]
    assert (tmp_path / "xdg" / "research-runner" / "data" / "research.db").is_file()


def test_reusing_an_idempotency_key_for_another_question_is_an_error(runner_env: dict[str, str]) -> None:
    first = invoke(runner_env, "submit", "--idempotency-key", "k-1", "First question")
    assert first.exit_code == 0, first.output
    other = invoke(runner_env, "submit", "--idempotency-key", "k-1", "Another question")
    assert other.exit_code == 2
    assert other.stderr.startswith("Error: idempotency key 'k-1' was already used by job ")


def test_a_nul_byte_is_a_one_line_error_on_postgresql(
    runner_env: dict[str, str], postgres_settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(settings_from({**runner_env, **postgres_settings_env}, monkeypatch))
    with pytest.raises(InvalidInput, match="contains a NUL character"):
        client.submit("Why\x00 not?")
    assert client.list_jobs() == []


def test_no_message_suggests_an_option_that_does_not_exist(runner_env: dict[str, str], finished_job: str) -> None:
    env = {**runner_env, "GEMINI_API_KEY": ""}
    settings = load_settings(data_dir=runner_env["RESEARCH_DATA_DIR"])
    running = store.add(settings, store.new_job(settings, "Still going", "deep-research-preview-04-2026"))
    store.transition(settings, running.id, ["queued"], status="running", interaction_id="v1_x")
    for command in ("cancel", "watch"):
        result = invoke(env, command, running.id)
        assert result.exit_code != 0 and "--emulator" not in result.stderr, result.stderr
        assert "no API key" in result.stderr


def test_a_batch_keeps_its_files_order_and_says_its_job_ids(
    runner_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_worker: Any
) -> None:
    questions = [f"Question {n:02d} [[emulator duration=0.2]]" for n in range(12)]
    (tmp_path / "ordered.txt").write_text("\n".join(questions) + "\n")
    settings = settings_from(runner_env, monkeypatch)
    submitted = invoke(runner_env, "batch", str(tmp_path / "ordered.txt"), "--json")
    assert submitted.exit_code == 0, submitted.output
    batch = json.loads(submitted.stdout)
    by_id = {job.id: job.question for job in store.load_many(settings, batch["job_ids"])}
    assert [by_id[job_id] for job_id in batch["job_ids"]] == questions
    listed = json.loads(invoke(runner_env, "list", "--batch", batch["id"], "--json").stdout)
    assert [job["question"] for job in listed] == questions
    worker = start_worker(runner_env)
    digest = wait_for(lambda: json.loads(invoke(runner_env, "batch", "status", batch["id"], "--json").stdout)
                      ["digest_path"], 90, "the digest")  # fmt: skip
    text_of = Path(digest).read_text()
    positions = [text_of.index(f"Question {n:02d}") for n in range(12)]
    assert positions == sorted(positions), worker.log()
    waited = invoke(runner_env, "submit", "--wait", "Streamed while I wait? [[emulator duration=1.5]]")
    assert waited.exit_code == 0, waited.output
    assert "completed" in waited.stdout.splitlines()[-1]
    thoughts = [line for line in waited.stderr.splitlines() if line.startswith("[") and "status:" not in line]
    assert thoughts, f"thought summaries stream while submit --wait waits, as in `watch JOB`: {waited.stderr}"
