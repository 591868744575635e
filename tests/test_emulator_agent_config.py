"""agent_config, charts, citation byte offsets, grounding counts and ids, all through the real SDK."""

from __future__ import annotations

import base64
import binascii
import json
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any, cast

import pytest
from google.genai import _interactions as gi

from emulator_support import AGENT, EmulatorHandle, assert_known, collect_stream, poll_until

KNOWN_IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "image/gif"}


def run(client: Any, question: str = "Research tidal power.", directive: str = "", **extra: Any) -> Any:
    """Create an agent interaction that ends at once and return it once completed."""
    created = client.interactions.create(
        agent=AGENT, input=f"{question} [[emulator duration=0 {directive}]]", background=True, **extra
    )
    return poll_until(lambda: _done(client.interactions.get(created.id)), message="completion")


def _done(it: Any) -> Any:
    return it if it.status == "completed" else None


def deltas(client: Any, interaction_id: str) -> list[Any]:
    return [e.delta for e in collect_stream(client, interaction_id) if e.event_type == "step.delta"]


def output_blocks(it: Any) -> list[Any]:
    return [block for step in it.steps if step.type == "model_output" for block in step.content]


# ---- thinking_summaries ------------------------------------------------------------------------------


@pytest.mark.parametrize("summaries", [None, "none", "auto"])
def test_thought_summaries_only_with_auto(emulator: EmulatorHandle, summaries: str | None) -> None:
    client = emulator.client()
    config = None if summaries is None else {"type": "deep-research", "thinking_summaries": summaries}
    it = run(client, agent_config=config) if config else run(client)
    assert_known(it)
    thoughts = [step for step in it.steps if step.type == "thought"]
    assert thoughts, "the agent still thinks, with or without summaries"
    streamed = {type(d).__name__ for d in deltas(client, it.id)}
    if summaries == "auto":
        assert all(step.summary and step.summary[0].text for step in thoughts)
        assert "ThoughtSummaryDelta" in streamed
    else:
        assert all(step.summary is None and step.signature for step in thoughts)
        assert "ThoughtSummaryDelta" not in streamed and "ThoughtSignatureDelta" in streamed


# ---- visualization -----------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    """Check a PNG chunk by chunk (signature, CRCs, IDAT inflates to the right size); return its size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, dict[bytes, bytes]()
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        chunks[kind] = chunks.get(kind, b"") + body
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)
    assert b"IEND" in chunks
    return width, height


def test_default_visualization_puts_a_real_chart_between_text_blocks(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = run(client)
    assert_known(it)
    blocks = output_blocks(it)
    kinds = [block.type for block in blocks]
    assert "image" in kinds and kinds[0] == "text" and kinds[-1] == "text"
    images = [block for block in blocks if block.type == "image"]
    for image in images:
        assert image.mime_type == "image/png"
        width, height = png_size(base64.b64decode(image.data, validate=True))
        assert width > 10 and height > 10
    streamed = [d for d in deltas(client, it.id) if d.type == "image"]
    assert [(d.data, d.mime_type) for d in streamed] == [(i.data, i.mime_type) for i in images]


def test_visualization_off_gives_no_chart(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = run(client, directive="charts=3", agent_config={"type": "deep-research", "visualization": "off"})
    assert [block.type for block in output_blocks(it)] == ["text"]
    assert all(d.type != "image" for d in deltas(client, it.id))


@pytest.mark.parametrize("count", [0, 3])
def test_charts_directive_sets_the_count(emulator: EmulatorHandle, count: int) -> None:
    it = run(emulator.client(), directive=f"charts={count}")
    assert sum(block.type == "image" for block in output_blocks(it)) == count


def test_broken_base64_chart(emulator: EmulatorHandle) -> None:
    it = run(emulator.client(), directive="charts=2 chart=broken-base64")
    first, second = [block for block in output_blocks(it) if block.type == "image"]
    with pytest.raises(binascii.Error):
        base64.b64decode(first.data, validate=True)
    png_size(base64.b64decode(second.data, validate=True))


def test_broken_mime_chart(emulator: EmulatorHandle) -> None:
    it = run(emulator.client(), directive="chart=broken-mime")
    (image,) = [block for block in output_blocks(it) if block.type == "image"]
    assert image.mime_type not in KNOWN_IMAGE_TYPES
    png_size(base64.b64decode(image.data, validate=True))  # the bytes are fine, only the type is unknown


# ---- agent_config validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"type": "deep-research", "colour": "blue"},
        {"type": "deep-research", "thinking_summaries": "always"},
        {"type": "deep-research", "visualization": "on"},
        {"type": "dynamic"},
    ],
)
def test_bad_agent_config_is_a_400(emulator: EmulatorHandle, config: dict[str, Any]) -> None:
    with pytest.raises(gi.BadRequestError) as info:
        emulator.client().interactions.create(agent=AGENT, input="Q", background=True, agent_config=cast(Any, config))
    assert cast(dict[str, Any], info.value.body)["error"]["code"] == "invalid_request"
    assert emulator.stats()["interactions_created"] == 0


@pytest.mark.parametrize(
    "config",
    [
        "deep-research",
        # The SDK refuses a config without `type` itself (pydantic discriminator) ...
        {"thinking_summaries": "auto"},
        # ... and coerces these to True before sending, so only a raw request can carry them.
        {"type": "deep-research", "collaborative_planning": "yes"},
        {"type": "deep-research", "enable_bigquery_tool": 1},
    ],
)
def test_malformed_agent_config_is_a_400(emulator: EmulatorHandle, config: Any) -> None:
    body = {"agent": AGENT, "input": "Q", "background": True, "agent_config": config}
    request = urllib.request.Request(
        emulator.url + "/v1beta/interactions",
        data=json.dumps(body).encode(),
        headers={"x-goog-api-key": "k", "content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400 and json.loads(info.value.read())["error"]["code"] == "invalid_request"


def test_full_agent_config_is_accepted_and_echoed(emulator: EmulatorHandle) -> None:
    config = {
        "type": "deep-research",
        "thinking_summaries": "auto",
        "visualization": "auto",
        "collaborative_planning": False,
        "enable_bigquery_tool": True,
    }
    it = run(emulator.client(), agent_config=cast(Any, config))
    assert it.agent_config.model_dump(mode="json", exclude_none=True) == config


# ---- citations, usage, ids ---------------------------------------------------------------------------


def test_citation_offsets_are_utf8_bytes(emulator: EmulatorHandle) -> None:
    it = run(emulator.client(), question="Étudier l'énergie marémotrice en Norvège — coûts ?")
    text_blocks = [block for block in output_blocks(it) if block.type == "text"]
    assert any(len(block.text.encode()) > len(block.text) for block in text_blocks), "the text is not ASCII"
    cited = 0
    for block in text_blocks:
        for ann in block.annotations or []:
            span = block.text.encode()[ann.start_index : ann.end_index].decode()
            assert span.startswith("[") and span.endswith("]") and span[1:-1].isdigit()
            cited += 1
    assert cited >= 5


def test_usage_counts_grounding_searches(emulator: EmulatorHandle) -> None:
    it = run(emulator.client())
    searches = sum(step.type == "google_search_call" for step in it.steps)
    counts = [(c.type, c.count) for c in it.usage.grounding_tool_count]
    assert counts == [("google_search", searches)] and searches > 0


def test_ids_differ_between_emulators_with_the_same_seed(start_emulator: Callable[..., EmulatorHandle]) -> None:
    first, second = start_emulator(), start_emulator()
    a, b = run(first.client()), run(second.client())
    assert a.id != b.id
    # Content stays reproducible by seed: only the ids differ.
    dumped = [[x.model_dump(mode="json") for x in output_blocks(it)] for it in (a, b)]
    assert dumped[0] == dumped[1]
