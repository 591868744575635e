"""Issue 11 end to end on real processes: plan review, follow-up threads, files with a question, and jobs waiting
in requires_action. One `research worker` on Redis and PostgreSQL serves the whole module; the CLI runs in-process."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import frontmatter
import psycopg
import pytest
import redis
from click.testing import CliRunner, Result

from research_runner import db, store
from research_runner.attachments import MAX_TOTAL_BYTES
from research_runner.cli import cli
from research_runner.constants import DEFAULT_AGENT
from research_runner.models import Job
from research_runner.pricing import DEFAULT_PRICES
from research_runner.settings import Settings, load_settings
from research_runner.status import ACTIVE_STATUSES, JobStatus

from conftest import FAST_POLICY, REDIS_URL, TEST_API_KEY, WorkerProcess, wait_for

JOB_DEADLINE = 60.0


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, postgres_url: str, emulator_process: Any) -> Iterator[dict[str, str]]:
    """The settings of every test here; they share one worker, each test with its own jobs."""
    folder = tmp_path_factory.mktemp("threads")
    db.upgrade(load_settings(database_url=postgres_url))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("TRUNCATE jobs, job_turns, job_files, figures")
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        "RESEARCH_DATA_DIR": str(folder / "data"),
        "RESEARCH_REPORTS_DIR": str(folder / "reports"),
        "RESEARCH_DATABASE_URL": postgres_url,
        "RESEARCH_BROKER_URL": REDIS_URL,
        "RESEARCH_GEMINI_BASE_URL": emulator_process.url,
        "GEMINI_API_KEY": TEST_API_KEY,
        **FAST_POLICY,
    }
    yield env


@pytest.fixture(scope="module", autouse=True)
def worker(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    process = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log", "--concurrency", "2")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def settings(env: dict[str, str]) -> Settings:
    return load_settings(database_url=env["RESEARCH_DATABASE_URL"], reports_dir=Path(env["RESEARCH_REPORTS_DIR"]))


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def ok(env: dict[str, str], *args: str) -> str:
    result = invoke(env, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def submit(env: dict[str, str], question: str, *extra: str) -> str:
    return str(json.loads(ok(env, "submit", "--json", *extra, question))["id"])


def reached(settings: Settings, job_id: str, *statuses: JobStatus) -> Job:
    """The job once it is in one of `statuses`; fails early if it ends anywhere else."""

    def check() -> Job | None:
        job = store.find(settings, job_id)
        if job.status in statuses:
            return job
        assert job.status in ACTIVE_STATUSES, (job.status, job.error)
        return None

    return wait_for(check, JOB_DEADLINE, f"job {job_id[:8]} to reach {statuses}", interval=0.2)  # type: ignore[no-any-return]


def interaction_cost(emulator: Any, interaction_id: str) -> float:
    """Dollars at the default price table for the usage the emulator reported."""
    usage = emulator.client().interactions.with_raw_response.get(interaction_id).json()["usage"]
    price = DEFAULT_PRICES[DEFAULT_AGENT]
    tokens_in = usage.get("total_input_tokens", 0) + usage.get("total_tool_use_tokens", 0)
    tokens_out = usage.get("total_output_tokens", 0) + usage.get("total_thought_tokens", 0)
    searches = sum(c["count"] for c in usage.get("grounding_tool_count", []))
    return float(tokens_in * price.input_per_million / 1e6 + tokens_out * price.output_per_million / 1e6
                 + searches * price.per_search)  # fmt: skip


def test_plan_revise_approve_then_report(
    env: dict[str, str], settings: Settings, worker: WorkerProcess, emulator_process: Any
) -> None:
    job_id = submit(env, "How do grid batteries earn money? [[emulator duration=0.3]]", "--plan")
    plan = reached(settings, job_id, JobStatus.PLAN_READY)
    waiting = json.loads(ok(env, "list", "--status", "plan_ready", "--json"))
    assert job_id in [job["id"] for job in waiting] and plan.report_path is None
    shown = ok(env, "show", job_id)
    assert shown.startswith(f"{job_id[:8]} · research plan (plan_ready)\n")
    assert "# Research plan: How do grid batteries earn money" in shown and "\n3. Open questions on " in shown
    hint = f"plan ready: research show {job_id[:8]}"
    assert hint in ok(env, "watch", "--once"), "watch lists a plan waiting for the user"
    assert f"job {job_id[:8]}: {hint}, then approve or revise it" in worker.log(), "and the worker's task result"

    change = "Add a step on capacity markets"
    assert ok(env, "revise", job_id, change) == (
        f"Job {job_id[:8]}: revision asked for; it is plan_ready again once the agent has answered\n"
    )
    revised = reached(settings, job_id, JobStatus.PLAN_READY)
    assert revised.plan_markdown and f"4. Requested change: {change}" in revised.plan_markdown
    assert f"4. Requested change: {change}" in ok(env, "show", job_id)

    assert ok(env, "approve", job_id, "--note", "Focus on Europe").startswith(f"Job {job_id[:8]}: plan approved")
    done = reached(settings, job_id, JobStatus.COMPLETED)
    report = Path(str(done.report_path)).read_text()
    followed = report.split("## Research plan followed", 1)[1]
    for step in ("1. Background and definitions on ", "3. Open questions on ", f"4. Requested change: {change}"):
        assert step in followed
    assert f'- "{change}"' in followed
    assert str(frontmatter.loads(report)["title"]).startswith("How do grid batteries earn money")

    status = json.loads(ok(env, "status", "--json", job_id))
    kinds = [(turn["kind"], turn["interaction_id"]) for turn in status["interactions"]]
    assert [kind for kind, _ in kinds] == ["plan", "revise", "approve"]
    assert len({interaction for _, interaction in kinds}) == 3 and kinds[-1][1] == done.interaction_id
    # Every turn was billed: the plan, the revised plan and the research.
    expected = sum(interaction_cost(emulator_process, interaction) for _, interaction in kinds)
    assert done.cost_usd == pytest.approx(expected, abs=1e-3) and status["estimated_cost_usd"] == done.cost_usd
    assert frontmatter.loads(report)["estimated_cost_usd"] == done.cost_usd
    turn_inputs = [turn.input or "" for turn in store.turns_of(settings, job_id)]
    assert turn_inputs[1] == change and turn_inputs[2].endswith("Focus on Europe")


def test_a_two_deep_follow_up_thread(env: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    parent_id = submit(env, "What limits tidal power? [[emulator duration=0.3]]")
    parent = reached(settings, parent_id, JobStatus.COMPLETED)
    first = json.loads(ok(env, "ask", "--json", parent_id, "Which sites are best?"))
    assert first["parent_id"] == parent_id and first["status"] == "queued"
    child = reached(settings, first["id"], JobStatus.COMPLETED)
    child_text = Path(str(child.report_path)).read_text()
    assert f'"{parent.report_title}"' in child_text and "## Building on the earlier report" in child_text

    answer = invoke(env, "ask", "--wait", child.id, "And what do they cost?")
    assert answer.exit_code == 0, answer.output
    assert "\n# Follow-up: And what do they cost\n" in answer.stdout and "## Building on the earlier" in answer.stdout
    assert answer.stdout.rstrip().splitlines()[-1].startswith("Job ") and " completed: " in answer.stdout
    [grandchild] = store.follow_ups_of(settings, child.id)
    assert grandchild.previous_interaction_id == child.interaction_id
    assert f'"{child.report_title}"' in str(grandchild.report_markdown), "it builds on the report it continues"
    assert '"Which sites are best?"' in str(grandchild.report_markdown), "it knows the earlier question"

    shown = ok(env, "show", parent_id)
    headers = [line for line in shown.splitlines() if line.startswith((parent_id[:8], child.id[:8], grandchild.id[:8]))]
    assert [h.split(" · ")[0] for h in headers] == [parent_id[:8], child.id[:8], grandchild.id[:8]]
    assert f"follow-up of {parent_id[:8]}" in headers[1] and f"follow-up of {child.id[:8]}" in headers[2]

    parent_file = Path(str(parent.report_path)).read_text()
    link = os.path.relpath(str(child.report_path), Path(str(parent.report_path)).parent)
    assert f"## Follow-ups\n\n- [Which sites are best?](<{link}>)" in parent_file
    assert parent_file == store.find(settings, parent_id).report_markdown
    assert "](<" in Path(str(child.report_path)).read_text().split("## Follow-ups", 1)[1]

    failed_id = submit(env, "Why? [[emulator outcome=failed duration=0.2]]")
    reached(settings, failed_id, JobStatus.FAILED)
    before = len(store.list_jobs(settings, limit=1000))
    refused = invoke(env, "ask", failed_id, "And then?")
    assert (refused.exit_code, refused.stdout, refused.stderr) == (
        1, "", f"Error: job {failed_id[:8]} is failed; follow-up questions need a completed job (or one waiting "
        "for input: requires_action)\n",
    )  # fmt: skip
    assert len(store.list_jobs(settings, limit=1000)) == before


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A valid PNG: signature, IHDR, one IDAT of grey pixels, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def tiny_pdf(title: str) -> bytes:
    """A one-page PDF with a title in its document information."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        f"<< /Title ({title}) >>".encode(),
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 4 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_a_pdf_and_an_image_go_with_the_question(env: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    image, pdf = tmp_path / "chart.png", tmp_path / "contract.pdf"
    image.write_bytes(tiny_png())
    pdf.write_bytes(tiny_pdf("Supply contract 2026"))
    job_id = submit(env, "What are the risks here? [[emulator duration=0.3]]", "--file", str(pdf), "--file",
                    str(image))  # fmt: skip
    job = reached(settings, job_id, JobStatus.COMPLETED)
    report = Path(str(job.report_path)).read_text()
    expected = [
        {"name": path.name, "type": kind, "size": path.stat().st_size,
         "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path, kind in ((pdf, "application/pdf"), (image, "image/png"))
    ]  # fmt: skip
    assert frontmatter.loads(report)["files"] == expected
    material = report.split("## Provided material", 1)[1]
    assert f'Document "Supply contract 2026" (application/pdf, 1 page, {pdf.stat().st_size} bytes)' in material
    assert f"An attached image (image/png, 3x2 px, {image.stat().st_size} bytes)" in material
    assert json.loads(ok(env, "status", "--json", job_id))["files"] == expected
    assert "files:          contract.pdf, chart.png\n" in ok(env, "status", job_id)


def bad_files(tmp_path: Path) -> list[tuple[Path, str]]:
    missing = tmp_path / "missing.pdf"
    folder = tmp_path / "folder.pdf"
    folder.mkdir()
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    huge = tmp_path / "huge.pdf"
    with huge.open("wb") as handle:
        handle.truncate(MAX_TOTAL_BYTES + 1)  # sparse: checked by its size before it is read
    cases = [
        (missing, f"file {missing} does not exist"),
        (folder, f"file {folder} is a folder; give a file"),
        (text, f"file {text} is not a PNG, JPEG, WEBP, HEIC/HEIF image or a PDF document (checked by its content, "
         "not its name)"),
        (huge, f"file {huge} is {(MAX_TOTAL_BYTES + 1) / 1e6:.1f} MB; the limit is {MAX_TOTAL_BYTES / 1e6:.1f} MB"),
    ]  # fmt: skip
    # A file that exists but whose read fails (EIO), whoever runs the tests: root reads a chmod-0 file.
    unreadable = Path("/proc/self/mem")
    cases.append((unreadable, f"cannot read file {unreadable} (Input/output error)"))
    if os.geteuid() != 0:
        locked = tmp_path / "locked.pdf"
        locked.write_bytes(tiny_pdf("Locked"))
        locked.chmod(0)
        cases.append((locked, f"cannot read file {locked} (Permission denied)"))
    return cases


def test_bad_files_are_one_line_naming_the_file_and_store_nothing(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(tiny_png())
    before = len(store.list_jobs(settings, limit=1000))
    for path, message in bad_files(tmp_path):
        for command in ("submit", "run"):
            result = invoke(env, command, "--file", str(good), "--file", str(path), "Is this stored?")
            assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {message}\n"), command
    assert len(store.list_jobs(settings, limit=1000)) == before


def test_a_plan_under_review_can_be_cancelled(env: dict[str, str], settings: Settings, emulator_process: Any) -> None:
    job_id = submit(env, "Is this worth researching? [[emulator duration=0.2]]", "--plan")
    reached(settings, job_id, JobStatus.PLAN_READY)
    created = emulator_process.stats()["interactions_created"]
    assert (
        ok(env, "cancel", job_id) == f"Job {job_id[:8]} cancelled: cancelled by the user while its research "
        "plan waited for review\n"
    )
    job = store.find(settings, job_id)
    assert job.status == JobStatus.CANCELLED and job.finished_at and job.report_path is None
    assert emulator_process.stats()["interactions_created"] == created, "nothing more was created"


def test_cancel_and_ask_on_a_job_in_requires_action(env: dict[str, str], settings: Settings) -> None:
    asked_id = submit(env, "Will you ask me first? [[emulator outcome=requires_action duration=0.3]]")
    cancelled_id = submit(env, "And you? [[emulator outcome=requires_action duration=0.3]]")
    waiting = reached(settings, asked_id, JobStatus.REQUIRES_ACTION)
    assert waiting.error == "the agent is waiting for input from you (requires_action)"
    kept = frontmatter.loads(Path(str(waiting.report_path)).read_text())
    assert kept["status"] == "requires_action" and "Please confirm or edit this plan" in kept.content
    reached(settings, cancelled_id, JobStatus.REQUIRES_ACTION)

    follow_up = json.loads(ok(env, "ask", "--json", asked_id, "Yes: go ahead, focus on costs"))
    answered = reached(settings, follow_up["id"], JobStatus.COMPLETED)
    assert answered.parent_id == asked_id and answered.previous_interaction_id == waiting.interaction_id

    result = invoke(env, "cancel", cancelled_id)
    assert (result.exit_code, result.stderr) == (0, "")
    job = store.find(settings, cancelled_id)
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert job.error and job.error.startswith("cancelled by the user while it was requires_action")


def test_a_batch_file_with_a_plan_and_files(env: dict[str, str], settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "figure.png").write_bytes(tiny_png())
    (tmp_path / "brief.pdf").write_bytes(tiny_pdf("Brief"))
    lines = [
        {"question": "Plan this first? [[emulator duration=0.3]]", "plan": True},
        {"question": "Read these? [[emulator duration=0.3]]", "files": ["inputs/figure.png", "brief.pdf"]},
    ]
    source = tmp_path / "batch.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("question,files\nFine?,brief.pdf\nMissing?,nowhere.pdf\n")
    before = len(store.list_jobs(settings, limit=1000))
    refused = invoke(env, "batch", str(bad))
    assert (refused.exit_code, refused.stderr) == (
        2,
        f"Error: bad.csv, line 3: file {tmp_path}/nowhere.pdf does not exist\n",
    )
    assert len(store.list_jobs(settings, limit=1000)) == before

    planned_id, read_id = json.loads(ok(env, "batch", "--json", str(source)))["job_ids"]
    reading = reached(settings, read_id, JobStatus.COMPLETED)
    front = frontmatter.loads(Path(str(reading.report_path)).read_text())
    listed = [f["name"] for f in cast(list[dict[str, Any]], front["files"])]
    assert listed == ["figure.png", "brief.pdf"]
    assert 'Document "Brief" (application/pdf, 1 page' in str(reading.report_markdown)
    reached(settings, planned_id, JobStatus.PLAN_READY)
    batch = json.loads(ok(env, "batch", "status", "--json", str(reading.batch_id)))
    assert batch["finished_at"] is None, "a plan waiting for the user holds the digest back"
    ok(env, "approve", planned_id)
    assert reached(settings, planned_id, JobStatus.COMPLETED).report_path
    digest = wait_for(lambda: json.loads(ok(env, "batch", "status", "--json", str(reading.batch_id)))["digest_path"],
                      JOB_DEADLINE, "the batch digest")  # fmt: skip
    text = Path(digest).read_text()
    assert text.count("- Status: completed") == 2
    costs = [store.find(settings, job_id).cost_usd or 0.0 for job_id in (planned_id, read_id)]
    assert f"- Estimated cost: ${sum(costs):,.2f}\n" in text and f"- Estimated cost: ${costs[1]:,.2f}\n" in text
    assert text.count("- Figures: 2\n") == 1 and text.count("- Figures: 1\n") == 2  # one chart each, two in all
