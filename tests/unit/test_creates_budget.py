"""The creates' share of a dispatch tick: all of it while the workers keep up, less while steps wait in the
broker, never under an eighth (polls of paid-for research first, yet a burst of creates always moves)."""

from __future__ import annotations

import pytest

from research_runner.beat import creates_budget
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


def test_the_default_budget_hands_out_10000_creates_within_60_s_even_at_its_floor_share() -> None:
    # 10,000 jobs in one batch must all be created within 60 s (issue 16): the whole budget, given while the
    # workers keep up, allows twice that; the floor alone would take 200 s.
    default = Settings(data_dir="/nonexistent/unused")
    assert creates_budget(default, 0) * 60 / default.dispatch_interval >= 10_000 * 2
    assert creates_budget(default, 10**9) >= 1
