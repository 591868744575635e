"""Pure rules of the emulator: agent_config validation and the PNG writer behind charts."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest

from research_emulator.agent_config import AgentConfig, AgentConfigError, parse_agent_config
from research_emulator.charts import bar_chart, png


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, AgentConfig()),
        ({"type": "deep-research"}, AgentConfig(thinking_summaries=False, visualization=True)),
        ({"type": "deep-research", "thinking_summaries": "auto"}, AgentConfig(thinking_summaries=True)),
        ({"type": "deep-research", "visualization": "off"}, AgentConfig(visualization=False)),
        (
            {"type": "deep-research", "collaborative_planning": True, "enable_bigquery_tool": True},
            AgentConfig(collaborative_planning=True, enable_bigquery_tool=True),
        ),
    ],
)
def test_valid_configs(value: Any, expected: AgentConfig) -> None:
    assert parse_agent_config(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([], "must be an object"),
        ({}, "type"),
        ({"type": "dynamic"}, "type"),
        ({"type": "deep-research", "extra": 1}, "unknown agent_config field(s) extra"),
        ({"type": "deep-research", "thinking_summaries": True}, "thinking_summaries"),
        ({"type": "deep-research", "visualization": "none"}, "visualization"),
        ({"type": "deep-research", "collaborative_planning": "true"}, "boolean"),
        ({"type": "deep-research", "enable_bigquery_tool": 0}, "boolean"),
    ],
)
def test_invalid_configs(value: Any, fragment: str) -> None:
    with pytest.raises(AgentConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_agent_config(value)


def test_png_is_well_formed() -> None:
    data = png([[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (255, 255, 255)]])
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and struct.unpack(">II", data[16:24]) == (2, 2)
    idat_at = 8 + 12 + length
    idat_length, idat = struct.unpack(">I4s", data[idat_at : idat_at + 8])
    assert idat == b"IDAT"
    raw = zlib.decompress(data[idat_at + 8 : idat_at + 8 + idat_length])
    assert raw == b"\x00\xff\x00\x00\x00\xff\x00" + b"\x00\x00\x00\xff\xff\xff\xff"
    assert data.endswith(b"IEND\xaeB`\x82")


def test_bar_chart_bars_are_drawn() -> None:
    assert bar_chart([0.5, 1.0]) != bar_chart([1.0, 0.5])
