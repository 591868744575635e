"""The Server-Sent Events of one interaction, each with the time (after creation) it becomes due.

Event ids are 1-based ordinals ("1", "2", ...). The list is a pure function of the interaction and its
cancellation time, and a cancel only changes events due after it, so ids already sent never change and
`last_event_id=E` resumes exactly after event E.
"""

from __future__ import annotations

import re
from typing import Any

from .lifecycle import UNKNOWN_STATUS, Interaction, dumps, iso

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"

# Model output is streamed in paragraph-sized text deltas of roughly this many characters.
_CHUNK = 400


def encode(event_id: int, event: dict[str, Any]) -> bytes:
    payload = {"event_type": event["event_type"], "event_id": str(event_id), **event}
    return b"event: " + str(event["event_type"]).encode() + b"\ndata: " + dumps(payload) + b"\n\n"


def _text_chunks(text: str) -> list[str]:
    """Split text at paragraph boundaries into chunks whose concatenation is exactly `text`."""
    chunks: list[str] = []
    for part in re.split(r"(?<=\n\n)", text):
        if chunks and len(chunks[-1]) + len(part) <= _CHUNK:
            chunks[-1] += part
        elif part:
            chunks.append(part)
    return chunks


def _content_deltas(block: dict[str, Any]) -> list[dict[str, Any]]:
    """Deltas of one output block: text chunks then that block's annotations (offsets relative to the
    block), or one `image` delta (SDK ImageDelta: data, mime_type) for a chart."""
    if block["type"] == "image":
        return [{"type": "image", "data": block["data"], "mime_type": block["mime_type"]}]
    deltas: list[dict[str, Any]] = [{"type": "text", "text": chunk} for chunk in _text_chunks(block["text"])]
    if block.get("annotations"):
        deltas.append({"type": "text_annotation_delta", "annotations": block["annotations"]})
    return deltas


def _step_events(index: int, step: dict[str, Any]) -> list[dict[str, Any]]:
    kind = step["type"]
    if kind == "thought":
        start: dict[str, Any] = {"type": "thought"}
        deltas = [{"type": "thought_summary", "content": block} for block in step.get("summary", [])]
        if "signature" in step:  # thinking_summaries "none": only the signature (SDK ThoughtSignatureDelta)
            deltas.append({"type": "thought_signature", "signature": step["signature"]})
    elif kind == "model_output":
        start = {"type": "model_output"}
        deltas = []
        for block in step.get("content", []):
            deltas += _content_deltas(block)
    else:
        start, deltas = step, []
    return [
        {"event_type": "step.start", "index": index, "step": start},
        *({"event_type": "step.delta", "index": index, "delta": d} for d in deltas),
        {"event_type": "step.stop", "index": index},
    ]


def build_events(it: Interaction) -> list[tuple[float, bytes]]:
    """All events this interaction will emit given its current end state, as (due, encoded bytes)."""
    cached = it.events_cache
    if cached is not None and cached[0] == it.cancelled_at:
        return cached[1]
    end, final = it.end()
    header: dict[str, Any] = {"id": it.id, "object": "interaction", "status": "queued", "created": iso(it.created_wall)}
    header.update({"agent": it.agent} if it.agent else {"model": it.model})
    timeline: list[tuple[float, dict[str, Any]]] = [
        (0.0, {"event_type": "interaction.created", "interaction": header}),
        (it.queued_for, {"event_type": "interaction.status_update", "interaction_id": it.id, "status": "in_progress"}),
    ]
    # Index 0 is the user_input step: it is not streamed, but indices match the resource's `steps`.
    for index, timed in enumerate(it.steps()):
        if index == 0 or (end is not None and timed.due > end):
            continue
        timeline += [(timed.due, event) for event in _step_events(index, timed.step)]
    if it.outcome == "unknown_status" and end is not None and it.duration < end:  # paused, then cancelled
        timeline.append(
            (
                it.duration,
                {"event_type": "interaction.status_update", "interaction_id": it.id, "status": UNKNOWN_STATUS},
            )
        )
    if end is not None and final is not None:
        # Cancelled while queued: drop the in_progress update that would have come later.
        timeline = [(due, event) for due, event in timeline if due <= end]
        timeline += [(end, event) for event in _final_events(it, end, final)]
    events = [(due, encode(n, event)) for n, (due, event) in enumerate(timeline, start=1)]
    it.events_cache = (it.cancelled_at, events)
    return events


def _final_events(it: Interaction, end: float, final: str) -> list[dict[str, Any]]:
    body = it.resource(end)
    update = {
        "event_type": "interaction.status_update",
        "interaction_id": it.id,
        "status": final,
        "usage": body.get("usage"),
    }
    if final == "failed":
        # A failed run ends with an `error` event rather than `interaction.completed`.
        return [update, {"event_type": "error", "error": body["errors"][0]}]
    if final == UNKNOWN_STATUS:  # not an end: the stream stays open, as it would for a status we cannot know
        return [update]
    return [update, {"event_type": "interaction.completed", "interaction": body}]
