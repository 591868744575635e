"""Submit → poll → report on real processes: emulator, `research worker`, and the real broker and database."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, cast

import frontmatter
import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from research_runner import store
from research_runner.cli import cli
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.status import ACTIVE_STATUSES, JobStatus

from conftest import settings_from, wait_for

MIXED_OUTCOMES = ["completed"] * 8 + ["failed"] * 3 + ["incomplete"] * 3 + ["budget_exceeded"] * 3 + ["stuck"] * 3
EXPECTED = {"stuck": JobStatus.CANCELLED}
JOB_DEADLINE = 90.0


def invoke(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result


def question(i: int, outcome: str) -> str:
    duration = 0.5 + i % 4 * 0.4
    return f"Job {i}: how do tidal power stations store energy? [[emulator outcome={outcome} duration={duration}]]"


def submit_all(env: dict[str, str], outcomes: list[str]) -> dict[str, str]:
    """Submit through the CLI; returns job id → requested outcome."""
    submitted = {}
    for i, outcome in enumerate(outcomes):
        result = invoke(env, "submit", "--json", question(i, outcome))
        assert result.exit_code == 0, result.output
        submitted[_json_id(result.output)] = outcome
    return submitted


def _json_id(output: str) -> str:
    payload = json.loads(output)
    assert payload["status"] == "queued" and payload["interaction_id"] is None
    return str(payload["id"])


def cancel_stuck(env: dict[str, str], settings: Settings, submitted: dict[str, str]) -> None:
    for job_id, outcome in submitted.items():
        if outcome != "stuck":
            continue
        running = functools.partial(lambda ref: store.find(settings, ref).status == JobStatus.RUNNING, job_id)
        wait_for(running, 30, f"job {job_id} running")
        result = invoke(env, "cancel", job_id)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"Job {job_id[:8]} cancelled")


def wait_all_ended(settings: Settings, ids: list[str]) -> list[Job]:
    def ended() -> list[Job] | None:
        found = [store.find(settings, job_id) for job_id in ids]
        return None if any(job.status in ACTIVE_STATUSES for job in found) else found

    return wait_for(ended, JOB_DEADLINE, "every job to end", interval=0.3)  # type: ignore[no-any-return]


def sources_of(markdown: str) -> list[str]:
    """Links listed under the report's `## Sources` heading, in order."""
    tokens = MarkdownIt().parse(markdown)
    headings = [
        i for i, t in enumerate(tokens) if t.type == "inline" and t.content == "Sources" and tokens[i - 1].tag == "h2"
    ]
    assert len(headings) == 1, "a report has exactly one Sources section"
    start = headings[0]
    links = []
    for token in tokens[start + 1 :]:
        if token.type == "heading_open":
            break
        for child in token.children or []:
            if child.type == "link_open":
                links.append(str(child.attrs["href"]))
    return links


def check_report(job: Job, reports_dir: Path, emulator: Any) -> None:
    files = sorted(reports_dir.glob(f"*-{job.short_id}.md"))
    assert [str(f) for f in files] == [job.report_path]
    text = files[0].read_text()
    assert text == job.report_markdown
    post = frontmatter.loads(text)
    assert post["job_id"] == job.id and post["interaction_id"] == job.interaction_id
    assert post["status"] == job.status and post["question"] == job.question
    assert cast(dict[str, Any], post["usage"])["total_tokens"] == job.total_tokens
    interaction = emulator.client().interactions.with_raw_response.get(job.interaction_id).json()
    cited = [
        a["url"]
        for s in interaction["steps"]
        if s["type"] == "model_output"
        for c in s["content"]
        for a in c.get("annotations", [])
        if a["type"] == "url_citation"
    ]
    assert len(cited) > len(set(cited)), "the emulator should cite a URL twice so de-duplication is exercised"
    assert sources_of(text) == list(dict.fromkeys(cited))
    assert "[[emulator" not in post.content


def check_outcomes(ended: list[Job], submitted: dict[str, str], reports_dir: Path, emulator: Any) -> None:
    for job in ended:
        outcome = submitted[job.id]
        assert job.status == EXPECTED.get(outcome, outcome), (job.id, job.status, job.error)
        assert job.finished_at is not None and job.interaction_id
        if job.status == JobStatus.COMPLETED:
            check_report(job, reports_dir, emulator)
            assert job.error is None and job.report_title
            continue
        assert job.error
        if job.status == JobStatus.INCOMPLETE:
            assert job.report_markdown, "an incomplete job keeps its partial text"
        if job.report_markdown:  # partial results are kept, marked with their status
            assert Path(str(job.report_path)).read_text() == job.report_markdown
            assert frontmatter.loads(job.report_markdown)["status"] == job.status
        else:
            assert job.report_path is None
    stats = emulator.stats()
    assert stats["interactions_created"] == len(submitted)
    by_input = stats["creates_by_input"]
    assert sorted(by_input.values()) == [1] * len(submitted)
    assert set(by_input) == {job.question for job in ended}


def run_mixed(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, start_worker: Any, emulator: Any, outcomes: list[str]
) -> None:
    settings = settings_from(env, monkeypatch)
    worker = start_worker(env, "--concurrency", "2")
    submitted = submit_all(env, outcomes)
    cancel_stuck(env, settings, submitted)
    ended = wait_all_ended(settings, list(submitted))
    emulator.set_faults({})  # the checks below read interactions through the emulator too
    check_outcomes(ended, submitted, settings.reports_dir, emulator)
    assert worker.process.poll() is None, worker.log()


def test_twenty_mixed_jobs_on_redis_and_postgres(
    runner_env: dict[str, str],
    postgres_settings_env: dict[str, str],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    start_worker: Any,
    emulator: Any,
) -> None:
    env = {**runner_env, **postgres_settings_env, "RESEARCH_BROKER_URL": redis_url}
    run_mixed(env, monkeypatch, start_worker, emulator, MIXED_OUTCOMES)


def test_mixed_jobs_on_the_embedded_default(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, start_worker: Any, emulator: Any
) -> None:
    outcomes = ["completed"] * 4 + ["failed", "incomplete", "budget_exceeded", "stuck"]
    run_mixed(runner_env, monkeypatch, start_worker, emulator, outcomes)
    assert Path(runner_env["RESEARCH_DATA_DIR"], "broker.db").exists()
    assert Path(runner_env["RESEARCH_DATA_DIR"], "research.db").exists()


def test_api_faults_on_polls_delay_jobs_but_lose_none(
    runner_env: dict[str, str],
    postgres_settings_env: dict[str, str],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    start_worker: Any,
    emulator: Any,
) -> None:
    emulator.set_faults({"get": {"429": 0.25, "503": 0.15}})
    env = {**runner_env, **postgres_settings_env, "RESEARCH_BROKER_URL": redis_url, "RESEARCH_GET_ATTEMPTS": "1"}
    run_mixed(env, monkeypatch, start_worker, emulator, ["completed"] * 6)
    gets = Counter(emulator.stats()["requests"]["get"])
    assert gets["429"] > 0 and gets["503"] > 0 and gets["200"] > 0


def run_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "research_runner", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_research_run_processes_a_job_in_process(runner_env: dict[str, str], emulator: Any) -> None:
    result = run_command(runner_env, "run", "How do tidal power stations store energy? [[emulator duration=1]]")
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("Job ") and " completed: " in last
    path = Path(last.split(" completed: ")[1])
    assert path.parent == Path(runner_env["RESEARCH_REPORTS_DIR"]) and path.exists()
    assert frontmatter.loads(path.read_text())["status"] == "completed"
    assert emulator.stats()["interactions_created"] == 1


def test_research_run_without_a_key_uses_a_private_emulator(tmp_path: Path) -> None:
    env = {"RESEARCH_DATA_DIR": str(tmp_path / "data"), "RESEARCH_REPORTS_DIR": str(tmp_path / "reports")}
    result = run_command(env, "run", "What is the history of the bicycle?")
    assert result.returncode == 0, result.stderr
    assert "private local emulator" in result.stderr
    [report] = (tmp_path / "reports").glob("*-history-of-the-bicycle-*.md") or [None]
    assert report is not None and "emulated" in report.read_text()


def test_research_run_reports_a_failed_job_with_exit_code_1(runner_env: dict[str, str]) -> None:
    result = run_command(runner_env, "run", "Why? [[emulator outcome=failed duration=0.5]]")
    assert result.returncode == 1
    assert " failed: " in result.stdout.strip().splitlines()[-1]
