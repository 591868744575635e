"""`agent_config` of a deep-research create: validation and the effective settings it implies.

Source: google-genai 3.6.1 `_gaos/types/interactions/deepresearchagentconfig.py` (`DeepResearchAgentConfig`:
`type: "deep-research"`, `thinking_summaries: "auto"|"none"` (`thinkingsummaries.py`), `visualization:
"auto"|"off"`, `collaborative_planning: bool`, `enable_bigquery_tool: bool`) and Google's Deep Research docs
(agent_config table: `thinking_summaries` defaults to "none", `visualization` to "auto"). The API is strict
about request fields, so an unknown key or value is a 400 rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

AGENT_CONFIG_TYPE = "deep-research"
_CHOICES: dict[str, tuple[str, ...]] = {
    "thinking_summaries": ("auto", "none"),
    "visualization": ("auto", "off"),
}
_FLAGS = ("collaborative_planning", "enable_bigquery_tool")
KNOWN_KEYS = ("type", *_CHOICES, *_FLAGS)


class AgentConfigError(ValueError):
    """A bad `agent_config`; the message goes back in a 400 body."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What the emulator does with the config; defaults are the documented ones."""

    thinking_summaries: bool = False
    visualization: bool = True
    collaborative_planning: bool = False
    enable_bigquery_tool: bool = False


def parse_agent_config(value: Any) -> AgentConfig:
    """Validate a sent `agent_config` (None = not sent) into the effective settings."""
    if value is None:
        return AgentConfig()
    if not isinstance(value, dict):
        raise AgentConfigError("`agent_config` must be an object")
    unknown = sorted(str(key) for key in value if key not in KNOWN_KEYS)
    if unknown:
        raise AgentConfigError(f"unknown agent_config field(s) {', '.join(unknown)}; allowed: {', '.join(KNOWN_KEYS)}")
    if value.get("type") != AGENT_CONFIG_TYPE:
        raise AgentConfigError(f"`agent_config.type` must be {AGENT_CONFIG_TYPE!r} for deep-research agents")
    for key, allowed in _CHOICES.items():
        if key in value and value[key] not in allowed:
            raise AgentConfigError(f"`agent_config.{key}` must be one of {', '.join(allowed)}; got {value[key]!r}")
    for key in _FLAGS:
        if key in value and not isinstance(value[key], bool):
            raise AgentConfigError(f"`agent_config.{key}` must be a boolean; got {value[key]!r}")
    return AgentConfig(
        thinking_summaries=value.get("thinking_summaries", "none") == "auto",
        visualization=value.get("visualization", "auto") == "auto",
        collaborative_planning=value.get("collaborative_planning", False),
        enable_bigquery_tool=value.get("enable_bigquery_tool", False),
    )
