"""Schedule question templates and cron expressions: what is refused at add time, and how firing expands them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from research_runner import schedules
from research_runner.constants import MAX_QUESTION_CHARS
from research_runner.exceptions import InvalidInput

REFUSED = [
    ("On {date:d}", "placeholder {date:d} in 'On {date:d}' has a format or conversion; write {date} or {week}"),
    ("{date:>9000}", "placeholder {date:>9000} in '{date:>9000}' has a format or conversion; write {date} or {week}"),
    ("{week!r}", "placeholder {week!r} in '{week!r}' has a format or conversion; write {date} or {week}"),
    ("{date[0]}", "placeholder {date[0]} in '{date[0]}' has a format or conversion; write {date} or {week}"),
    ("{date.year}", "placeholder {date.year} in '{date.year}' has a format or conversion; write {date} or {week}"),
    ("Item {0}", "unknown placeholder {0} in 'Item {0}'; use {date} or {week}"),
    ("Item {}", "unknown placeholder {} in 'Item {}'; use {date} or {week}"),
    ("Sales in {month}", "unknown placeholder {month} in 'Sales in {month}'; use {date} or {week}"),
    ("a { b", "a lone { in 'a { b'; write literal braces as {{ and }}"),
    ("{date}}", "a lone } in '{date}}'; write literal braces as {{ and }}"),
    ("{{date}", "a lone } in '{{date}'; write literal braces as {{ and }}"),
]


@pytest.mark.parametrize(("template", "message"), REFUSED)
def test_only_bare_placeholders_are_accepted(template: str, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        schedules.check_placeholders(template)
    assert str(raised.value) == message


DUE = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
EXPANDED = [
    ("Markets on {date} ({week})", "Markets on 2026-11-30 (2026-W49)"),
    ("{{date}} is literal, {{ and }} too", "{date} is literal, { and } too"),
    ("{{{week}}}", "{2026-W49}"),
    ("no placeholders", "no placeholders"),
    # Stored before templates were checked: kept as written, never formatted (no padding to 9000 characters).
    ("{date:>9000} {0} {} {week!r} a { b }", "{date:>9000} {0} {} {week!r} a { b }"),
]


@pytest.mark.parametrize(("template", "question"), EXPANDED)
def test_expansion_is_plain_replacement(template: str, question: str) -> None:
    assert schedules.expand_question(template, schedules.placeholder_values(DUE, "Europe/Paris")) == question


@pytest.mark.parametrize(
    ("template", "fits"),
    [
        ("x" * (MAX_QUESTION_CHARS - 10) + "{date}", True),
        ("x" * (MAX_QUESTION_CHARS - 9) + "{date}", False),
        ("x" * (MAX_QUESTION_CHARS - 8) + "{week}", True),
        ("{week}" * 1001, False),
    ],
)
def test_the_longest_expansion_must_fit_a_question(template: str, fits: bool) -> None:
    longest = schedules.expand_question(template, schedules.LONGEST_VALUES)
    if fits:
        schedules.check_expansion(template, longest)
    else:
        with pytest.raises(InvalidInput, match=f"; the limit is {MAX_QUESTION_CHARS}$"):
            schedules.check_expansion(template, longest)


def test_a_blank_expansion_is_refused() -> None:
    with pytest.raises(InvalidInput, match="is empty once expanded"):
        schedules.check_expansion("  ", "  ")


@pytest.mark.parametrize("cron", ["0 9 30 2 *", "0 0 31 4,6 *", "0 0 31 11 *"])
def test_a_cron_that_never_fires_is_refused(cron: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        schedules.check_cron(cron)
    assert str(raised.value) == f"cron expression {cron!r} never fires: no date matches it, e.g. 30 February"


@pytest.mark.parametrize("cron", ["0 0 29 2 *", "0 9 30 2 1", "0 9 * * 1"])
def test_a_cron_that_fires_rarely_is_accepted(cron: str) -> None:
    assert schedules.check_cron(cron) == cron


def test_a_firing_keeps_each_file_items_key_scoped_to_the_firing() -> None:
    key = schedules.firing_key("s" * 32, "2026-11-30T08:00:00+00:00", 3, "acme-q1")
    assert key == f"schedule:{'s' * 32}:2026-11-30T08:00:00+00:00:key:acme-q1"
    assert schedules.firing_key("s" * 32, "t", 3, None) == f"schedule:{'s' * 32}:t:3"
    long = schedules.firing_key("s" * 32, "run-now:2026-11-30T08:00:00.123456+00:00", 0, "k" * 200)
    assert len(long) <= 200 and ":sha256:" in long
    assert long != schedules.firing_key("s" * 32, "run-now:2026-11-30T08:00:00.123456+00:00", 0, "k" * 199 + "j")
