"""The creates' share of a dispatch tick. Its cap follows the polls: halved while a poll handed out a tick ago is
still not done, else one floor (an eighth) higher up to the whole budget. The budget is the cap less what waits
in the broker, never under the floor: polls of paid-for research first, yet a burst of creates always moves."""

from __future__ import annotations

import pytest

from research_runner.beat import creates_budget, creates_cap
from research_runner.settings import Settings


def settings(dispatch_creates: int) -> Settings:
    return Settings(data_dir="/nonexistent/unused", dispatch_creates=dispatch_creates)


@pytest.mark.parametrize(
    ("ceiling", "waiting", "budget"),
    [
        (400, 0, 400),  # nothing waits: the whole budget
        (400, 32, 368),  # one message waits: less by its jobs
        (400, 250, 150),
        (400, 300, 100),
        (400, 350, 50),  # the floor, an eighth...
        (400, 10_000, 50),  # ...however much waits
        (3, 0, 3),
        (3, 500, 1),  # an eighth of 3 rounds to 0: one create a tick still goes out
        (1, 500, 1),
    ],
)
def test_the_budget_shrinks_with_the_backlog_down_to_a_floor(ceiling: int, waiting: int, budget: int) -> None:
    assert creates_budget(settings(ceiling), waiting) == budget


@pytest.mark.parametrize(
    ("cap", "waiting", "budget"), [(200, 0, 200), (200, 100, 100), (200, 180, 50), (50, 0, 50), (400, 32, 368)]
)
def test_the_budget_is_the_cap_less_the_backlog(cap: int, waiting: int, budget: int) -> None:
    assert creates_budget(settings(400), waiting, cap) == budget


@pytest.mark.parametrize(
    ("lag", "last", "cap"),
    [
        (0.0, None, 400),  # the first tick: the whole budget
        (0.0, 400, 400),  # never above it
        (0.0, 100, 150),  # the polls keep up: one floor more a tick
        (0.4, 100, 150),  # handed out this tick and not done yet: the workers are at it
        # A tick hands out polls up to half a tick (0.5 s) before they are due (leases.poll_head_start), so
        # one handed out a tick ago and still not done lags at least half a tick.
        (0.5, 100, 150),  # exactly half a tick: still this tick's
        (0.51, 400, 200),  # one from the tick before is not done: the workers are behind, halve it
        (30.0, 200, 100),
        (5.0, 60, 50),  # never under the floor
        (5.0, None, 200),
    ],
)
def test_the_cap_halves_while_polls_lag_a_tick_and_else_grows_by_a_floor(
    lag: float, last: int | None, cap: int
) -> None:
    assert creates_cap(settings(400), lag, last) == cap


def test_after_a_lag_the_cap_climbs_back_in_steps_not_at_once() -> None:
    # Jumping back to the whole budget sent bursts of 200-300 creates that made the next polls late (issue 16).
    rules, cap = settings(400), 400
    caps = []
    for lag in (2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0):
        cap = creates_cap(rules, lag, cap)
        caps.append(cap)
    assert caps == [200, 100, 50, 100, 150, 200, 250, 300, 350, 400, 400]


def test_the_default_budget_hands_out_10000_creates_within_60_s_even_at_its_floor_share() -> None:
    # 10,000 jobs in one batch must all be created within 60 s (issue 16): the whole budget, given while the
    # workers keep up, allows twice that; the floor alone would take 200 s.
    default = Settings(data_dir="/nonexistent/unused")
    assert creates_budget(default, 0) * 60 / default.dispatch_interval >= 10_000 * 2
    assert creates_budget(default, 10**9) >= 1
