"""The cost estimate: tool-use tokens bill as input, thoughts as output, searches apiece; a thread adds up."""

from __future__ import annotations

import pytest

from research_runner import pricing
from research_runner.pricing import AgentPrice

PRICE = AgentPrice(input_per_million=2.0, output_per_million=12.0, per_search=0.014)
USAGE = {"total_input_tokens": 500_000, "total_tool_use_tokens": 100_000, "total_output_tokens": 10_000,
         "total_thought_tokens": 40_000}  # fmt: skip

ESTIMATES = [
    (PRICE, USAGE, 0, round(600_000 * 2 / 1e6 + 50_000 * 12 / 1e6, 4)),  # 1.2 + 0.6
    (PRICE, USAGE, 10, 1.94),
    (PRICE, {"total_input_tokens": 1}, 0, 0.0),
    (None, USAGE, 3, None),  # no price for the agent
    (PRICE, {}, 3, None),  # no usage reported
]


@pytest.mark.parametrize(("price", "usage", "searches", "expected"), ESTIMATES)
def test_estimate(price: AgentPrice | None, usage: dict[str, int], searches: int, expected: float | None) -> None:
    assert pricing.estimate(price, usage, searches) == expected


PLUS = [(None, None, None), (None, 1.5, 1.5), (0.25, None, 0.25), (0.25, 1.5, 1.75), (0.1, 0.2, 0.3)]


@pytest.mark.parametrize(("earlier", "cost", "expected"), PLUS)
def test_a_thread_adds_up(earlier: float | None, cost: float | None, expected: float | None) -> None:
    assert pricing.plus(earlier, cost) == expected
