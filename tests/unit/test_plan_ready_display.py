"""A job waiting with its research plan says so wherever jobs are shown: watch, progress lines, Flower's results."""

from __future__ import annotations

from rich.console import Console

from research_runner import display, watch, worker
from research_runner.models import Job
from research_runner.status import JobStatus

JOB_ID = "3f2a9c1d" + "0" * 24


def job(status: JobStatus, thought: str | None = "Reading sources") -> Job:
    return Job(id=JOB_ID, question="Why?", agent="deep-research-preview-04-2026", status=status, last_thought=thought)


def rendered(shown: list[Job]) -> str:
    console = Console(record=True, width=200)
    console.print(watch.jobs_table(shown))
    return console.export_text()


def test_a_plan_ready_job_points_at_research_show() -> None:
    waiting = job(JobStatus.PLAN_READY)
    assert display.activity(waiting) == "plan ready: research show 3f2a9c1d"
    assert display.progress_line(waiting).endswith(" · plan_ready · 0s · 0 polls · plan ready: research show 3f2a9c1d")
    assert "plan ready: research show 3f2a9c1d" in rendered([waiting])
    assert worker._describe(JOB_ID, waiting)["next"] == "plan ready: research show 3f2a9c1d"


def test_other_jobs_show_their_latest_thought() -> None:
    running = job(JobStatus.RUNNING)
    assert display.activity(running) == "Reading sources"
    assert display.progress_line(job(JobStatus.RUNNING, None)).endswith(" · 0 polls")
    assert "Reading sources" in rendered([running])
    assert "next" not in worker._describe(JOB_ID, job(JobStatus.COMPLETED))
