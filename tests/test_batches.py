"""Batch files, batch digests, and schedules that fire once per due time."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import frontmatter
import pytest
from click.testing import CliRunner, Result
from markdown_it import MarkdownIt
from sqlalchemy import text

from research_runner import batches, db, schedules
from research_runner.batchfile import Item
from research_runner.cli import cli
from research_runner.exceptions import InvalidInput, JobNotFound
from research_runner.models import Batch
from research_runner.settings import Settings
from research_runner.status import ACTIVE_STATUSES

from conftest import settings_from


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def dump(settings: Settings) -> list[Any]:
    with db.get_engine(settings.database_url).connect() as conn:
        return [
            tuple(row)
            for table in ("jobs", "batches", "schedules")
            for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1"))
        ]


@pytest.fixture
def env(runner_env: dict[str, str], postgres_settings_env: dict[str, str], redis_url: str) -> dict[str, str]:
    return {**runner_env, **postgres_settings_env, "RESEARCH_BROKER_URL": redis_url}


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, postgres_url: str) -> Settings:
    settings = settings_from(env, monkeypatch)
    with db.get_engine(settings.database_url).begin() as conn:
        conn.execute(text("TRUNCATE batches, schedules"))
    return settings


BAD_FILES = [
    (
        "batch.jsonl",
        [json.dumps({"question": f"q{i}"}) for i in range(16)] + ['{"question": "broken"'],
        "Error: batch.jsonl, line 17: invalid JSON (Expecting ',' delimiter)",
    ),
    (
        "batch.csv",
        ["question,agent"] + [f"q{i}," for i in range(15)] + ["q16,deep-thought"],
        "Error: batch.csv, line 17: unknown agent 'deep-thought'; choose one of: deep-research-preview-04-2026, "
        "deep-research-max-preview-04-2026, deep-research-pro-preview-12-2025",
    ),
    (
        "batch.txt",
        [f"q{i}" for i in range(16)] + ["x" * 9000],
        "Error: batch.txt, line 17: the question is 9000 characters long; the limit is 8000",
    ),
    (
        "batch.jsonl",
        ['{"question": "a", "idempotency_key": "k"}'] * 2,
        "Error: batch.jsonl, line 2: idempotency key repeats line 1",
    ),
    ("batch.txt", ["# only a comment", ""], "Error: batch.txt has no questions"),
    ("batch.txt", [f"q{i}" for i in range(1001)], "Error: batch.txt has 1001 questions; a batch holds at most 1000"),
]


@pytest.mark.parametrize(("name", "lines", "message"), BAD_FILES, ids=lambda v: str(v)[:20])
def test_a_bad_batch_file_names_its_line_and_stores_nothing(
    env: dict[str, str], settings: Settings, tmp_path: Path, name: str, lines: list[str], message: str
) -> None:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    before = dump(settings)
    result = invoke(env, "batch", str(path))
    assert (result.exit_code, result.stderr) == (2, message + "\n")
    assert dump(settings) == before


def links_of(markdown: str) -> list[str]:
    return [
        str(child.attrs["href"])
        for token in MarkdownIt().parse(markdown)
        if token.type == "inline"
        for child in token.children or []
        if child.type == "link_open"
    ]


def texts_of(markdown: str, kind: str) -> list[str]:
    """The literal text of every heading ("heading") or link label ("link"), as a reader sees it."""
    found, tokens = [], MarkdownIt().parse(markdown)
    for opener, inline in itertools.pairwise(tokens):
        if kind == "heading" and opener.type == "heading_open":
            found.append("".join(child.content for child in inline.children or []))
        if kind == "link" and inline.type == "inline":
            found += _labels(inline.children or [])
    return found


def _labels(children: list[Any]) -> list[str]:
    labels, label = [], None
    for child in children:
        if child.type == "link_open":
            label = ""
        elif child.type == "link_close" and label is not None:
            labels.append(label)
            label = None
        elif label is not None:
            label += child.content
    return labels


def test_thirty_question_batch_ends_with_a_digest_linking_every_report(
    env: dict[str, str], settings: Settings, tmp_path: Path, start_worker: Any, emulator: Any
) -> None:
    outcomes = ["completed"] * 18 + ["failed"] * 4 + ["incomplete"] * 4 + ["budget_exceeded"] * 4
    path = tmp_path / "thirty.txt"
    path.write_text(
        "# thirty questions\n\n"
        + "".join(
            f"Q{i}: how do ports handle {o} cargo? [[emulator outcome={o} duration={0.3 + i % 5 * 0.2}]]\n"
            for i, o in enumerate(outcomes)
        )
    )
    start_worker(env, "--concurrency", "2")
    result = invoke(env, "batch", str(path), "--name", "thirty ports", "--wait", "--json")  # returns at the digest
    assert result.exit_code == 1, result.output  # 1: not every job completed
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"completed": 18, "failed": 4, "incomplete": 4, "budget_exceeded": 4}
    batch_id = summary["id"]
    batch = batches.find(settings, batch_id)
    assert batch.digest_path == summary["digest_path"] and batch.finished_at is not None
    found = batches.jobs_of(settings, batch_id)
    assert not [job for job in found if job.status in ACTIVE_STATUSES]
    assert batch.digest_path is not None
    digest = Path(batch.digest_path).read_text()
    assert Path(batch.digest_path).parent == settings.reports_dir / "batches"
    assert "- Jobs: 30 — budget_exceeded: 4, completed: 18, failed: 4, incomplete: 4" in digest
    linked = {(Path(batch.digest_path).parent / link).resolve() for link in links_of(digest)}
    reported = {Path(str(job.report_path)).resolve() for job in found if job.report_path}
    assert linked == reported and len(reported) >= 18
    headings, labels = texts_of(digest, "heading"), texts_of(digest, "link")
    assert headings[0] == "Batch: thirty ports"
    for number, job in enumerate(found, 1):
        assert headings[number] == f"{number}. {job.question}"
        if job.status == "completed":
            title = frontmatter.loads(Path(str(job.report_path)).read_text())["title"]
            assert title in labels and batches.first_paragraph(str(job.report_markdown)) in digest
    status = invoke(env, "batch", "status", "thirty ports")
    assert "completed:      18" in status.stdout and f"digest:         {batch.digest_path}" in status.stdout
    listed = json.loads(invoke(env, "list", "--batch", batch_id[:8], "--json", "--limit", "100").stdout)
    assert len(listed) == 30 and {job["batch_id"] for job in listed} == {batch_id}


def add_schedule(env: dict[str, str], name: str, *extra: str) -> Result:
    return invoke(env, "schedule", "add", name, "--cron", "0 9 * * 1", "--query", "Markets on {date} ({week})", *extra)


def test_two_schedulers_fire_once_per_due_time(env: dict[str, str], settings: Settings) -> None:
    assert add_schedule(env, "weekly", "--timezone", "Europe/Paris").exit_code == 0
    start = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # Monday 09:00 in Paris
    with db.get_engine(settings.database_url).begin() as conn:
        conn.execute(text("UPDATE schedules SET next_run_at = :t"), {"t": start})
    ticks = [start + timedelta(weeks=w, seconds=s) for w in range(3) for s in (0, 1, 2)]
    script = (
        "import sys; from datetime import datetime; from research_runner import schedules;"
        "from research_runner.settings import load_settings; s = load_settings();"
        "[schedules.fire_due(s, datetime.fromisoformat(t)) for t in sys.argv[1:]]"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, *[t.isoformat() for t in ticks]], env={**env, **_path()})
        for _ in range(2)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    with db.get_engine(settings.database_url).connect() as conn:
        fired = [row[0] for row in conn.execute(text("SELECT due_at FROM batches ORDER BY due_at"))]
        questions = [row[0] for row in conn.execute(text("SELECT question FROM jobs ORDER BY question"))]
    assert fired == [start + timedelta(weeks=w) for w in range(3)]
    assert questions == [
        "Markets on 2026-11-30 (2026-W49)",
        "Markets on 2026-12-07 (2026-W50)",
        "Markets on 2026-12-14 (2026-W51)",
    ]


def _path() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "")}


def test_missed_times_are_caught_up_once_unless_told_otherwise(env: dict[str, str], settings: Settings) -> None:
    assert add_schedule(env, "catch").exit_code == 0
    assert add_schedule(env, "skip", "--no-catch-up").exit_code == 0
    long_ago = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    with db.get_engine(settings.database_url).begin() as conn:
        conn.execute(text("UPDATE schedules SET next_run_at = :t"), {"t": long_ago})
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)  # 46 weekly times missed
    fired = schedules.fire_due(settings, now)
    assert [b.name for b in fired] == ["catch 2026-11-23 09:00"]  # once, as the latest missed Monday
    assert schedules.fire_due(settings, now) == []
    for name in ("catch", "skip"):
        assert schedules.find(settings, name).next_run_at == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def test_pause_resume_remove_and_run_now(env: dict[str, str], settings: Settings) -> None:
    assert add_schedule(env, "weekly").stdout.startswith("Schedule weekly added: 1 question(s), next run ")
    assert invoke(env, "schedule", "pause", "weekly").stdout == "Schedule weekly paused\n"
    with db.get_engine(settings.database_url).begin() as conn:
        conn.execute(text("UPDATE schedules SET next_run_at = :t"), {"t": datetime(2026, 1, 5, tzinfo=UTC)})
    assert schedules.fire_due(settings) == []  # paused: due, but nothing fires
    listed = invoke(env, "schedule", "list").stdout.splitlines()
    assert listed[0].split() == ["NAME", "CRON", "STATE", "NEXT", "RUN", "QUESTIONS"]
    assert listed[1].split()[:7] == ["weekly", "0", "9", "*", "*", "1", "paused"]
    resumed = invoke(env, "schedule", "resume", "weekly")
    assert resumed.stdout.startswith("Schedule weekly resumed: next run ")
    assert schedules.find(settings, "weekly").next_run_at > datetime.now(UTC)  # missed while paused: not owed
    fired = invoke(env, "schedule", "run-now", "weekly")
    assert fired.exit_code == 0 and fired.stdout.endswith(" with 1 jobs\n")
    assert len(dump(settings)) == 3  # one job, one batch, one schedule
    assert invoke(env, "schedule", "remove", "weekly").stdout == "Schedule weekly removed\n"
    assert invoke(env, "schedule", "show", "weekly").stderr == (
        "Error: no schedule named 'weekly'; `research schedule list` shows them\n"
    )
    assert len(dump(settings)) == 2  # the batch and its job stay


BAD_SCHEDULES = [
    (
        ["--cron", "61 9 * * 1", "--query", "q"],
        "Error: invalid cron expression '61 9 * * 1'; use five fields, e.g. \"0 9 * * 1\"",
    ),
    (
        ["--cron", "0 9 * * 1", "--query", "q", "--timezone", "Mars/Olympus"],
        "Error: unknown timezone 'Mars/Olympus'; use an IANA name such as Europe/Paris or UTC",
    ),
    (
        ["--cron", "0 9 * * 1", "--query", "Sales in {month}"],
        "Error: unknown placeholder {month} in 'Sales in {month}'; use {date} or {week}",
    ),
    (["--cron", "0 9 * * 1"], "Error: give the questions with --query (repeatable) or --file, not both"),
    (["--cron", "0 9 * * 1", "--query", "   "], "Error: the question is empty; pass the research question as text"),
    (
        ["--cron", "0 9 30 2 *", "--query", "q"],
        "Error: cron expression '0 9 30 2 *' never fires: no date matches it, e.g. 30 February",
    ),
    (
        ["--cron", "0 9 * * 1", "--query", "Pad {date:>9000}"],
        "Error: placeholder {date:>9000} in 'Pad {date:>9000}' has a format or conversion; write {date} or {week}",
    ),
    (
        ["--cron", "0 9 * * 1", "--query", "ok {date}", "--query", "x" * 7990 + " {date}"],
        f"Error: the question {'x' * 79 + '…'!r} expands to up to 8001 characters; the limit is 8000",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_SCHEDULES, ids=lambda v: str(v)[:25])
def test_bad_schedules_are_refused_and_store_nothing(
    env: dict[str, str], settings: Settings, args: list[str], message: str
) -> None:
    before = dump(settings)
    result = invoke(env, "schedule", "add", "nope", *args)
    assert (result.exit_code, result.stderr) == (2, message + "\n")
    assert dump(settings) == before


def test_a_duplicate_schedule_name_is_refused(env: dict[str, str], settings: Settings) -> None:
    assert add_schedule(env, "weekly").exit_code == 0
    before = dump(settings)
    result = add_schedule(env, "weekly")
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: a schedule named 'weekly' already exists; pick another name or remove it first\n",
    )
    assert dump(settings) == before


def submit_keyed(settings: Settings, name: str, keys: list[str]) -> tuple[Batch, int]:
    items = [Item(f"question {key}", idempotency_key=key) for key in keys]
    with db.session(settings) as session:
        return batches.add(settings, session, name, items, "deep-research-preview-04-2026")


def test_a_batch_of_known_keys_stores_nothing_and_says_so(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "keys.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{k}", "idempotency_key": k}) + "\n" for k in "ab"))
    assert invoke(env, "batch", str(path)).exit_code == 0
    before = dump(settings)
    result = invoke(env, "batch", str(path))
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: all 2 question(s) were already submitted (their idempotency keys are known); nothing stored\n",
    )
    assert dump(settings) == before
    with pytest.raises(batches.NothingToSubmit):
        submit_keyed(settings, "again", ["a", "b"])
    assert submit_keyed(settings, "partly", ["a", "c"])[1] == 1  # one known key is skipped, the batch is stored


def test_a_blank_batch_name_is_refused(env: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    path.write_text("a question\n")
    before = dump(settings)
    result = invoke(env, "batch", str(path), "--name", "  \t ")
    assert (result.exit_code, result.stderr) == (2, "Error: a batch name needs 1 to 200 characters, not only spaces\n")
    assert dump(settings) == before


def test_an_ambiguous_batch_id_prefix_is_named_as_such(settings: Settings) -> None:
    with db.session(settings) as session:
        for suffix in ("1", "2"):
            session.add(Batch(id="abcd" + suffix * 28, name=f"batch {suffix}", job_count=0))
    with pytest.raises(InvalidInput, match=r"^batch id 'abcd' is ambiguous; give more characters$"):
        batches.find(settings, "abcd")
    assert batches.find(settings, "abcd1").name == "batch 1"
    assert batches.find(settings, "batch 2").id == "abcd" + "2" * 28
    with pytest.raises(JobNotFound):
        batches.find(settings, "abce")


def test_a_schedule_from_a_file_keeps_each_items_key(env: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"question": "a {date}", "idempotency_key": "acme"}\n{"question": "b {week}"}\n')
    assert invoke(env, "schedule", "add", "filed", "--cron", "0 9 * * 1", "--file", str(path)).exit_code == 0
    schedule = schedules.find(settings, "filed")
    due = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    with db.get_engine(settings.database_url).begin() as conn:
        conn.execute(text("UPDATE schedules SET next_run_at = :t"), {"t": due})
    [batch] = schedules.fire_due(settings, due)
    keys = sorted(str(job.idempotency_key) for job in batches.jobs_of(settings, batch.id))
    assert keys == [f"schedule:{schedule.id}:{due.isoformat()}:1", f"schedule:{schedule.id}:{due.isoformat()}:key:acme"]


def ended_batch(settings: Settings, name: str) -> Batch:
    batch, _ = submit_keyed(settings, name, [name])
    with db.get_engine(settings.database_url).begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'completed' WHERE batch_id = :b"), {"b": batch.id})
    return batch


def test_a_digest_that_cannot_be_written_does_not_stop_the_others(settings: Settings) -> None:
    broken, fine = ended_batch(settings, "broken"), ended_batch(settings, "fine")
    blocked = settings.reports_dir / "batches" / f"{broken.created_at:%Y-%m-%d}-broken-{broken.short_id}.md"
    blocked.mkdir(parents=True)  # a folder where the digest goes: the rename onto it fails
    outcome = batches.finalize_each(settings)
    assert [Path(p).name for p in outcome.done] == [f"{fine.created_at:%Y-%m-%d}-fine-{fine.short_id}.md"]
    assert [(f.id, f.name) for f in outcome.failures] == [(broken.id, "broken")]
    assert outcome.failures[0].error.startswith("IsADirectoryError: ")
    assert batches.find(settings, broken.id).finished_at is None  # tried again on a later tick
    blocked.rmdir()
    assert [Path(p).name for p in batches.finalize_ready(settings)] == [blocked.name]


def test_a_schedule_that_fails_to_fire_does_not_stop_the_others(env: dict[str, str], settings: Settings) -> None:
    assert add_schedule(env, "good").exit_code == 0
    assert add_schedule(env, "legacy").exit_code == 0
    stored_before_limits = json.dumps([{"question": "x" * 7995 + " {date}"}])  # 8006 characters once expanded
    due = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    with db.get_engine(settings.database_url).begin() as conn:
        conn.execute(text("UPDATE schedules SET next_run_at = :t"), {"t": due})
        conn.execute(text("UPDATE schedules SET items = :i WHERE name = 'legacy'"), {"i": stored_before_limits})
    outcome = schedules.fire_each(settings, due)
    assert [b.name for b in outcome.done] == ["good 2026-11-30 09:00"]
    legacy = schedules.find(settings, "legacy")
    assert [(f.id, f.name) for f in outcome.failures] == [(legacy.id, "legacy")]
    assert outcome.failures[0].error.startswith("InvalidInput: the question 'xxx")
    assert legacy.next_run_at > due  # this due time is spent, not failed again on every tick
    before = dump(settings)
    with pytest.raises(InvalidInput, match="expands to up to 8006 characters; the limit is 8000"):
        schedules.run_now(settings, "legacy")
    assert dump(settings) == before
