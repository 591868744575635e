"""Estimated cost of a research, from its usage and a price table per agent.

The API returns no cost (reference: "No cost field in the response"); Google quotes about $1-3 per deep
research task ($3-7 for Max). The estimate multiplies the usage the API reports by list prices:
input tokens (tool-use tokens are billed as input), output tokens (thought tokens are billed as output) and
grounding searches. DEFAULT_PRICES are Gemini 3 Pro list prices as we knew them on 2026-11-26 ($2 per million
input tokens up to 200k, $12 per million output tokens, $14 per 1,000 Google Search queries); they could not be
checked against Google's pricing page from here, so override them with RESEARCH_PRICES when they change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from research_runner.constants import AGENTS

if TYPE_CHECKING:
    from research_runner.models import Job

PRICES_AS_OF = "2026-11-26"


class AgentPrice(BaseModel):
    """US dollars per million tokens, and per grounding search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    per_search: float = Field(ge=0)


GEMINI_3_PRO = AgentPrice(input_per_million=2.0, output_per_million=12.0, per_search=0.014)
DEFAULT_PRICES: dict[str, AgentPrice] = dict.fromkeys(AGENTS, GEMINI_3_PRO)


def estimate(price: AgentPrice | None, usage: dict[str, Any], searches: int) -> float | None:
    """Dollars for one interaction's usage; None when there is no price or no usage to go on."""
    if price is None or not usage:
        return None
    input_tokens = int(usage.get("total_input_tokens") or 0) + int(usage.get("total_tool_use_tokens") or 0)
    output_tokens = int(usage.get("total_output_tokens") or 0) + int(usage.get("total_thought_tokens") or 0)
    dollars = (
        input_tokens * price.input_per_million / 1e6
        + output_tokens * price.output_per_million / 1e6
        + searches * price.per_search
    )
    return round(dollars, 4)


def plus(earlier: float | None, cost: float | None) -> float | None:
    """A job's running estimate: every turn of its thread (plans, revisions, the research) is billed."""
    if earlier is None or cost is None:
        return cost if earlier is None else earlier
    return round(earlier + cost, 4)


@dataclass
class UsageRow:
    """Totals of the jobs that finished on one day with one agent."""

    day: str
    agent: str
    jobs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    searches: int = 0
    cost_usd: float = 0.0
    unpriced_jobs: int = 0  # finished without usage to estimate from


def summarize(jobs: Iterable[Job]) -> list[UsageRow]:
    """Jobs, tokens, searches and estimated cost per day (UTC) and agent, oldest first."""
    rows: dict[tuple[str, str], UsageRow] = {}
    for job in jobs:
        assert job.finished_at is not None
        day = f"{job.finished_at:%Y-%m-%d}"
        row = rows.setdefault((day, job.agent), UsageRow(day, job.agent))
        usage = json.loads(job.usage_json or "{}")
        row.jobs += 1
        row.input_tokens += job.input_tokens or 0
        row.output_tokens += job.output_tokens or 0
        row.total_tokens += job.total_tokens or 0
        row.searches += sum(int(c.get("count") or 0) for c in usage.get("grounding_tool_count") or [])
        row.cost_usd = round(row.cost_usd + (job.cost_usd or 0.0), 4)
        row.unpriced_jobs += job.cost_usd is None
    return [rows[key] for key in sorted(rows)]
