"""When cron schedules fire across daylight-saving changes: each due time once, never a double paid run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from research_runner.schedules import latest_due, next_after


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def firings(cron: str, timezone: str, start: datetime, count: int) -> list[datetime]:
    moments, moment = [], start
    for _ in range(count):
        moment = next_after(cron, timezone, moment)
        moments.append(moment)
    return moments


CASES = [
    # Paris springs forward on 2026-03-29 at 02:00 CET (01:00 UTC) to 03:00 CEST: 09:00 moves an hour earlier in UTC.
    ("0 9 * * *", "Europe/Paris", "2026-03-27T12:00", ["2026-03-28T08:00", "2026-03-29T07:00", "2026-03-30T07:00"]),
    # 02:30 does not exist that day: it fires once, at the first valid time after the gap (03:00 CEST).
    ("30 2 * * *", "Europe/Paris", "2026-03-27T12:00", ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"]),
    # Paris falls back on 2026-10-25 at 03:00 CEST (01:00 UTC): 02:30 happens twice and fires at the first only.
    ("30 2 * * *", "Europe/Paris", "2026-10-23T12:00", ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"]),
    ("0 9 * * *", "Europe/Paris", "2026-10-23T12:00", ["2026-10-24T07:00", "2026-10-25T08:00", "2026-10-26T08:00"]),
    # An hourly schedule fires at every real hour, both passes of the repeated one included.
    ("0 * * * *", "Europe/Paris", "2026-10-24T23:30", ["2026-10-25T00:00", "2026-10-25T01:00", "2026-10-25T02:00"]),
    # New York: forward on 2026-03-08 at 02:00 EST, back on 2026-11-01 at 02:00 EDT.
    (
        "30 2 * * *",
        "America/New_York",
        "2026-03-06T12:00",
        ["2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30"],
    ),
    (
        "30 1 * * *",
        "America/New_York",
        "2026-10-30T12:00",
        ["2026-10-31T05:30", "2026-11-01T05:30", "2026-11-02T06:30"],
    ),
    ("0 9 * * 1", "America/New_York", "2026-10-27T00:00", ["2026-11-02T14:00", "2026-11-09T14:00"]),
    ("0 9 * * *", "UTC", "2026-10-24T09:00", ["2026-10-25T09:00", "2026-10-26T09:00"]),  # strictly after
]


@pytest.mark.parametrize(("cron", "timezone", "start", "expected"), CASES)
def test_next_after_across_clock_changes(cron: str, timezone: str, start: str, expected: list[str]) -> None:
    assert firings(cron, timezone, z(start), len(expected)) == [z(e) for e in expected]


@pytest.mark.parametrize(
    ("cron", "timezone", "now", "expected"),
    [
        ("0 9 * * *", "Europe/Paris", "2026-03-29T08:00", "2026-03-29T07:00"),
        ("30 2 * * *", "Europe/Paris", "2026-03-29T05:00", "2026-03-29T01:00"),
        # After the repeated 02:30 has passed twice, the latest due time is still its first pass.
        ("30 2 * * *", "Europe/Paris", "2026-10-25T03:00", "2026-10-25T00:30"),
        ("0 * * * *", "Europe/Paris", "2026-10-25T01:30", "2026-10-25T01:00"),
        ("0 9 * * *", "America/New_York", "2026-11-01T15:00", "2026-11-01T14:00"),
        ("0 9 * * *", "UTC", "2026-10-24T09:00", "2026-10-23T09:00"),  # strictly before
    ],
)
def test_latest_due_across_clock_changes(cron: str, timezone: str, now: str, expected: str) -> None:
    assert latest_due(cron, timezone, z(now)) == z(expected)


def test_results_keep_the_callers_timezone() -> None:
    moment = next_after("0 9 * * *", "Europe/Paris", z("2026-03-27T12:00"))
    assert moment.tzinfo is UTC
