"""How jobs read in a terminal and in a pipe: the list at any width, one time format, reports with their URLs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from research_runner import display
from research_runner.models import Job

NOW = datetime(2026, 11, 26, 10, 38, 20, tzinfo=UTC)
LONG_QUESTION = (
    "What are the [bold]main causes[/bold] of glacier retreat in the Alps since 1850,\n"
    "and how do the measurement methods of the last decade compare with the older ones?"
)
REPORT = """---
job_id: 0123456789abcdef0123456789abcdef
title: Glaciers
---

# Glaciers

Glaciers retreat[^1] because summers are warmer.

## Sources

1. [Swiss glacier monitoring](<https://glamos.ch/en/report-2025>)
2. [WGMS](<https://wgms.ch/latest-glacier-mass-balance-data/>)
"""


def job(**fields: object) -> Job:
    values: dict[str, object] = {
        "id": "0123456789abcdef0123456789abcdef",
        "question": LONG_QUESTION,
        "agent": "deep-research-preview-04-2026",
        "status": "needs_attention",
        "created_at": NOW - timedelta(minutes=12, seconds=30),
        "finished_at": NOW - timedelta(minutes=1),
        "report_path": "/home/someone/research/reports/2026-11-26-what-are-the-main-causes-0123456.md",
    }
    return Job.model_validate({**values, **fields})


def rendered(renderable: object, width: int) -> list[str]:
    out = StringIO()
    Console(width=width, file=out, highlight=False, soft_wrap=True).print(renderable)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [60, 61, 80, 100, 120, 200])
def test_the_list_keeps_id_status_age_and_the_start_of_the_question_at_any_width(width: int) -> None:
    lines = rendered(display.jobs_table([job(), job(id="fedcba98" * 4, status="completed")], NOW), width)
    assert lines[0].split() == ["ID", "STATUS", "AGE", "QUESTION"]
    assert len(lines) == 3, "one line per job, the question cut rather than wrapped"
    assert all(len(line) <= width for line in lines)
    first = lines[1].split()
    assert first[:5] == ["01234567", "needs_attention", "12m", "What", "are"]
    assert lines[2].split()[:4] == ["fedcba98", "completed", "12m", "What"]
    assert "reports" not in "".join(lines), "the report path belongs to status and show"
    flat = " ".join(LONG_QUESTION.split())
    shown = lines[1].split("12m  ", 1)[1].rstrip()
    if len(flat) + 33 <= width:
        assert shown == flat, "the whole question when it fits, as text, not markup"
    else:
        assert shown.endswith("…") and flat.startswith(shown[:-1]) and len(shown) >= width - 34


def test_the_list_at_80_columns_exactly() -> None:
    assert rendered(display.jobs_table([job(question="How are glaciers measured?")], NOW), 80) == [
        "ID        STATUS           AGE  QUESTION                  ",
        "01234567  needs_attention  12m  How are glaciers measured?",
    ]


AGES = [
    (timedelta(0), "0s"),
    (timedelta(seconds=45), "45s"),
    (timedelta(seconds=59.9), "59s"),
    (timedelta(minutes=1), "1m"),
    (timedelta(minutes=12, seconds=59), "12m"),
    (timedelta(hours=3, minutes=59), "3h"),
    (timedelta(hours=23, minutes=59, seconds=59), "23h"),
    (timedelta(days=2, hours=23), "2d"),
    (timedelta(days=400), "400d"),
    (timedelta(seconds=-5), "0s"),  # clocks of two machines disagree a little
]


@pytest.mark.parametrize(("ago", "text"), AGES)
def test_age_is_the_largest_whole_unit_since_a_moment(ago: timedelta, text: str) -> None:
    assert display.age(NOW - ago, NOW) == text


def test_age_in_the_list_counts_from_submit_even_for_a_finished_job() -> None:
    finished = job(created_at=NOW - timedelta(days=2, hours=1), finished_at=NOW - timedelta(days=2))
    assert rendered(display.jobs_table([finished], NOW), 100)[1].split()[2] == "2d"


DURATIONS = [
    (0, "0s"),
    (45.9, "45s"),
    (60, "1m 00s"),
    (12 * 60 + 5, "12m 05s"),
    (3 * 3600 + 4 * 60 + 5, "3h 04m 05s"),
    (2 * 86400 + 3 * 3600 + 4 * 60 + 5, "2d 03h 04m"),
    (-3, "0s"),
]


@pytest.mark.parametrize(("seconds", "text"), DURATIONS)
def test_one_duration_format(seconds: float, text: str) -> None:
    assert display.duration_text(seconds) == text


def test_elapsed_is_the_duration_from_creation_to_the_end() -> None:
    assert display.elapsed(job()) == "11m 30s"


WHENS = [
    (datetime(2026, 11, 26, 10, 38, 59, tzinfo=UTC), "2026-11-26 10:38 UTC"),
    (datetime(2026, 11, 26, 12, 38, tzinfo=ZoneInfo("Europe/Paris")), "2026-11-26 11:38 UTC"),
    (datetime(2026, 1, 2, 3, 4, tzinfo=UTC), "2026-01-02 03:04 UTC"),
]


@pytest.mark.parametrize(("moment", "text"), WHENS)
def test_one_time_format_in_utc(moment: datetime, text: str) -> None:
    assert display.when(moment) == text


def test_the_status_card_shows_times_in_the_one_format() -> None:
    card = display.status_card(job(submitted_at=NOW - timedelta(minutes=12)))
    assert "created:        2026-11-26 10:25 UTC" in card.splitlines()
    assert "submitted:      2026-11-26 10:26 UTC" in card.splitlines()
    assert "finished:       2026-11-26 10:37 UTC" in card.splitlines()
    assert "elapsed:        11m 30s" in card.splitlines()


def test_a_report_in_a_pipe_is_plain_markdown_with_every_url() -> None:
    out = StringIO()
    display.render_report(Console(file=out, width=200), job(report_markdown=REPORT))
    text = out.getvalue()
    assert text == display.report_text(job(report_markdown=REPORT))
    assert text.startswith("# Glaciers\n\nGlaciers retreat[^1]") and "job_id:" not in text
    assert "https://glamos.ch/en/report-2025" in text and "https://wgms.ch/latest-glacier-mass-balance-data/" in text
    assert all(line == line.rstrip() for line in text.splitlines()), "no padding to the console width"
    assert text.endswith(">)\n") and not text.endswith("\n\n")


def test_a_report_on_a_terminal_is_rendered() -> None:
    out = StringIO()
    display.render_report(
        Console(file=out, width=120, force_terminal=True, color_system=None), job(report_markdown=REPORT)
    )
    text = out.getvalue()
    assert "01234567 · needs_attention · /home/someone" in text
    assert "# Glaciers" not in text and "Glaciers retreat" in text, "the Markdown is rendered, not printed"


def test_plain_can_be_asked_for_on_a_terminal() -> None:
    out = StringIO()
    display.render_report(Console(file=out, force_terminal=True), job(report_markdown=REPORT), plain=True)
    assert out.getvalue() == display.report_text(job(report_markdown=REPORT))
