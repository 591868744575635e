"""Issue 10 end to end on real processes: charts on disk, estimated cost and usage, the monthly budget, delete and
purge, and the one-line errors of bad settings. A `research worker` (embedded SQLite) and the emulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import frontmatter
import pytest
from click.testing import CliRunner, Result
from google.genai import _interactions

from research_runner import store
from research_runner.cli import cli
from research_runner.constants import DEFAULT_AGENT
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.status import ACTIVE_STATUSES, JobStatus

from conftest import settings_from, wait_for

LIST_HINT = "`research list` shows the jobs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Not the defaults, so the test also shows RESEARCH_PRICES reaching the worker.
PRICES = {DEFAULT_AGENT: {"input_per_million": 3.0, "output_per_million": 15.0, "per_search": 0.02}}


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def submit(env: dict[str, str], question: str, *extra: str) -> str:
    result = invoke(env, "submit", "--json", *extra, question)
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["id"])


def status_json(env: dict[str, str], job_id: str) -> dict[str, Any]:
    result = invoke(env, "status", "--json", job_id)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def ended(settings: Settings, job_id: str, timeout: float = 60) -> Job:
    def done() -> Job | None:
        job = store.find(settings, job_id)
        return None if job.status in ACTIVE_STATUSES else job

    return wait_for(done, timeout, f"job {job_id[:8]} to end", interval=0.2)  # type: ignore[no-any-return]


@pytest.fixture
def env(runner_env: dict[str, str]) -> dict[str, str]:
    return {**runner_env, "RESEARCH_PRICES": json.dumps(PRICES)}


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    return settings_from(env, monkeypatch)


def expected_cost(interaction: dict[str, Any], price: dict[str, float]) -> float:
    """The estimate from the usage the emulator returned: tool-use tokens bill as input, thoughts as output."""
    usage = interaction["usage"]
    tokens_in = usage.get("total_input_tokens", 0) + usage.get("total_tool_use_tokens", 0)
    tokens_out = usage.get("total_output_tokens", 0) + usage.get("total_thought_tokens", 0)
    searches = sum(c["count"] for c in usage.get("grounding_tool_count", []))
    assert searches > 0, "the emulator's report used searches"
    dollars = tokens_in * price["input_per_million"] / 1e6 + tokens_out * price["output_per_million"] / 1e6
    return float(round(dollars + searches * price["per_search"], 4))


def raw_interaction(emulator: Any, interaction_id: str) -> dict[str, Any]:
    return emulator.client().interactions.with_raw_response.get(interaction_id).json()  # type: ignore[no-any-return]


def check_charts(env: dict[str, str], job: Job, count: int) -> list[Path]:
    """Each chart a valid PNG beside the report, referenced at its place, listed by `status` and `status --json`."""
    report = Path(str(job.report_path))
    figures = [Path(p) for p in json.loads(job.figures or "[]")]
    assert [f.name for f in figures] == [f"figure-{n}.png" for n in range(1, count + 1)]
    markdown = report.read_text()
    positions = []
    for figure in figures:
        assert figure.parent == report.parent / report.stem
        data = figure.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR"
        reference = f"](<{report.stem}/{figure.name}>)"
        assert markdown.count(reference) == 1
        positions.append(markdown.index(reference))
        caption = markdown.rfind(f"*Figure {figures.index(figure) + 1}:", 0, positions[-1])
        assert caption != -1, "the chart sits after its caption, where the model placed it"
    assert positions == sorted(positions) and positions[-1] < markdown.index("## Sources")
    assert frontmatter.loads(markdown)["figures"] == count
    assert status_json(env, job.id)["figures"] == [str(f) for f in figures]
    card = invoke(env, "status", job.id).stdout
    assert f"figures:        {', '.join(str(f) for f in figures)}\n" in card
    shown = invoke(env, "show", job.id).stdout
    assert f"\nfigures: {', '.join(str(f) for f in figures)}\n" in shown and f"](<{report.stem}/figure-1.png>)" in shown
    return [report, *figures]


def test_charts_cost_usage_delete_and_purge(
    env: dict[str, str], settings: Settings, start_worker: Any, emulator: Any
) -> None:
    start_worker(env, "--concurrency", "2")
    charted = submit(env, "How do heat pumps work in winter? [[emulator duration=0.4 charts=2]]")
    broken = submit(env, "Why are tides regular? [[emulator duration=0.3 charts=2 chart=broken-base64]]")
    unknown_type = submit(env, "Why is the sea salty? [[emulator duration=0.3 charts=1 chart=broken-mime]]")
    plain = submit(env, "Which trees grow fastest? [[emulator duration=0.3 charts=3]]", "--no-charts")
    stuck = submit(env, "Does this ever end? [[emulator outcome=stuck]]")

    job = ended(settings, charted)
    assert job.status == JobStatus.COMPLETED
    files = check_charts(env, job, 2)

    skipped = ended(settings, broken)
    assert skipped.status == JobStatus.COMPLETED and skipped.error is None
    text = Path(str(skipped.report_path)).read_text()
    assert "> Figure 1 could not be kept: its data is not valid base64." in text
    assert frontmatter.loads(text)["figures_skipped"] == 1
    assert [Path(p).name for p in json.loads(skipped.figures or "[]")] == ["figure-2.png"]

    mime = ended(settings, unknown_type)
    assert mime.status == JobStatus.COMPLETED and mime.figures is None
    assert (
        "> Figure 1 could not be kept: its type 'image/x-emulated-unknown' is not one of image/png, image/jpeg, "
        "image/gif, image/webp." in str(mime.report_markdown)
    )

    no_charts = ended(settings, plain)
    assert no_charts.status == JobStatus.COMPLETED and status_json(env, plain)["figures"] == []
    assert raw_interaction(emulator, str(no_charts.interaction_id))["agent_config"]["visualization"] == "off"
    assert "](<" not in Path(str(no_charts.report_path)).read_text().split("## Sources")[0]

    check_costs(env, emulator, [job, skipped, mime, no_charts])
    check_delete(env, settings, emulator, job, files, stuck)
    check_purge(env, emulator, [skipped, no_charts])


def check_costs(env: dict[str, str], emulator: Any, jobs: list[Job]) -> None:
    """The estimate in the front matter, `status --json` and `research usage --json` totals."""
    total, searches, tokens = 0.0, 0, 0
    for job in jobs:
        interaction = raw_interaction(emulator, str(job.interaction_id))
        cost = expected_cost(interaction, PRICES[DEFAULT_AGENT])
        assert frontmatter.loads(Path(str(job.report_path)).read_text())["estimated_cost_usd"] == cost
        shown = status_json(env, job.id)
        kept = {k: v for k, v in interaction["usage"].items() if k.startswith("total_") or k == "grounding_tool_count"}
        assert shown["estimated_cost_usd"] == cost and shown["usage"] == kept
        assert f"cost:           ${cost:.2f} (estimated)\n" in invoke(env, "status", job.id).stdout
        total += cost
        searches += sum(c["count"] for c in interaction["usage"]["grounding_tool_count"])
        tokens += interaction["usage"]["total_tokens"]
    result = invoke(env, "usage", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    totals = (row["agent"], row["jobs"], row["searches"], row["total_tokens"])
    assert totals == (DEFAULT_AGENT, len(jobs), searches, tokens)
    assert row["cost_usd"] == pytest.approx(total, abs=1e-4) and row["unpriced_jobs"] == 0
    table = invoke(env, "usage").stdout
    assert f"Total estimated cost: ${total:,.2f} (prices as of " in table


def check_delete(
    env: dict[str, str], settings: Settings, emulator: Any, job: Job, files: list[Path], stuck: str
) -> None:
    running = wait_for(lambda: store.find(settings, stuck).status == JobStatus.RUNNING, 30, "stuck running")
    assert running
    refused = invoke(env, "delete", stuck, "--remote")
    assert (refused.exit_code, refused.stderr) == (
        1, f"Error: job {stuck[:8]} is running; cancel it first (`research cancel {stuck[:8]}`)\n"
    )  # fmt: skip
    assert invoke(env, "cancel", stuck).exit_code == 0

    result = invoke(env, "delete", job.id, "--remote")
    assert (result.exit_code, result.stdout) == (0, f"Job {job.short_id}: deleted 1 interaction(s) at Google\n")
    with pytest.raises(_interactions.NotFoundError):
        emulator.client().interactions.get(job.interaction_id)
    assert all(path.exists() for path in files), "--remote leaves the local files"
    result = invoke(env, "delete", job.id, "--local")
    assert (result.exit_code, result.stdout) == (0, f"Job {job.short_id}: deleted 3 local file(s)\n")
    assert not any(path.exists() for path in files) and not files[1].parent.exists()
    row = status_json(env, job.id)
    assert row["remote_deleted_at"] and row["local_deleted_at"] and row["report_path"] is None
    assert row["status"] == "completed" and row["interaction_id"] == job.interaction_id  # the row remembers
    assert "deleted:        at Google " in invoke(env, "status", job.id).stdout


def check_purge(env: dict[str, str], emulator: Any, jobs: list[Job]) -> None:
    assert invoke(env, "purge", "--older-than", "1d").stdout == "0 job(s) were purged\n"
    dry = invoke(env, "purge", "--older-than", "0h", "--dry-run")
    assert dry.exit_code == 0, dry.output
    for job in jobs:
        assert f"{job.short_id}: would delete 1 interaction(s), " in dry.stdout
    for job in jobs:
        assert Path(str(job.report_path)).exists()
        assert raw_interaction(emulator, str(job.interaction_id))["status"] == "completed"
    done = invoke(env, "purge", "--older-than", "0h", "--remote")
    assert done.stdout.endswith("job(s) were purged\n")
    for job in jobs:
        with pytest.raises(_interactions.NotFoundError):
            emulator.client().interactions.get(job.interaction_id)
        assert Path(str(job.report_path)).exists(), "--remote leaves the reports"
    done = invoke(env, "purge", "--older-than", "0h", "--local")
    for job in jobs:
        assert not Path(str(job.report_path)).exists()
        assert status_json(env, job.id)["local_deleted_at"]


def test_a_budget_holds_new_creates_back_but_never_cuts_a_running_job(
    env: dict[str, str], settings: Settings, start_worker: Callable[..., Any], emulator: Any
) -> None:
    tiny = {**env, "RESEARCH_MONTHLY_BUDGET_USD": "0.0001"}
    worker = start_worker(tiny)
    long = submit(tiny, "A longer one? [[emulator duration=2.5]]")
    short = submit(tiny, "A short one? [[emulator duration=0.3]]")
    first = ended(settings, short)
    assert first.status == JobStatus.COMPLETED and (first.cost_usd or 0) > 0.0001, "this spend reaches the budget"
    last = ended(settings, long)
    assert last.status == JobStatus.COMPLETED, "a running job is never cut off"
    assert last.finished_at and first.finished_at and last.finished_at > first.finished_at, "it ran past the budget"

    held = submit(tiny, "One more? [[emulator duration=0.3]]")
    reason = wait_for(lambda: store.find(settings, held).error, 30, "the budget reason")
    assert reason.startswith("waiting for budget: this month's estimated spend $")
    card = invoke(tiny, "status", held).stdout
    assert "status:         queued\n" in card and "error:          waiting for budget: " in card
    assert emulator.stats()["interactions_created"] == 2
    worker.stop()

    start_worker({**env, "RESEARCH_MONTHLY_BUDGET_USD": "1000"})
    raised = ended(settings, held)
    assert raised.status == JobStatus.COMPLETED and raised.error is None
    assert emulator.stats()["interactions_created"] == 3


BAD_SETTINGS = [
    ({"RESEARCH_VISUALIZATION": "sometimes"}, "Error: invalid setting RESEARCH_VISUALIZATION: Input should be "
     "'auto' or 'off'"),
    ({"RESEARCH_MONTHLY_BUDGET_USD": "-5"}, "Error: invalid setting RESEARCH_MONTHLY_BUDGET_USD: Input should be "
     "greater than or equal to 0"),
    ({"RESEARCH_PRICES": "{not json"}, "Error: invalid setting RESEARCH_PRICES: not valid JSON"),
    ({"RESEARCH_PRICES": json.dumps({DEFAULT_AGENT: {"input_per_million": 1}})},
     f"Error: invalid setting RESEARCH_PRICES ({DEFAULT_AGENT}.output_per_million): Field required"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "message"), BAD_SETTINGS, ids=lambda v: str(v)[:40])
def test_bad_settings_are_one_line_and_store_nothing(env: dict[str, str], bad: dict[str, str], message: str) -> None:
    result = invoke({**env, **bad}, "submit", "Is this stored?")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message + "\n")
    assert invoke(env, "list", "--json").stdout.strip() == "[]"


def test_deleting_an_unknown_job_is_one_line(env: dict[str, str]) -> None:
    for args in (["delete", "abcd1234"], ["delete", "abcd1234", "--remote"]):
        result = invoke(env, *args)
        assert (result.exit_code, result.stderr) == (1, f"Error: no job with id 'abcd1234'; {LIST_HINT}\n")
    result = invoke(env, "purge", "--older-than", "soon")
    assert (result.exit_code, result.stderr) == (2, "Error: invalid age 'soon'; use a number and d, h or w, e.g. 30d\n")
