"""What the runner reads from an interaction's JSON: status, the report's text and charts, citations, usage,
thoughts and labels.

Kept apart from the gateway so that reading stored results never imports the SDK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Citation:
    url: str
    title: str | None = None


@dataclass(frozen=True)
class Image:
    """A chart of the model output (SDK `ImageContent`): base64 `data` and its `mime_type`, as the API sent
    them; they are checked only when the report is written, so bad data costs the chart, not the job."""

    data: str
    mime_type: str | None


@dataclass(frozen=True)
class Snapshot:
    """What the runner needs from an interaction, read from its JSON."""

    id: str
    status: str
    text: str = ""
    citations: tuple[Citation, ...] = ()
    usage: dict[str, Any] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    last_thought: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # The model output in order: text blocks and charts, as the report shows them.
    parts: tuple[str | Image, ...] = ()

    @property
    def searches(self) -> int:
        """Grounding tool calls (`usage.grounding_tool_count[] {type, count}`)."""
        counts = self.usage.get("grounding_tool_count") or []
        return sum(int(c.get("count") or 0) for c in counts if isinstance(c, dict))


def snapshot_from_json(data: dict[str, Any]) -> Snapshot:
    steps = data.get("steps") or []
    parts, citations = _output(steps)
    thoughts = [_summary_text(s) for s in steps if s.get("type") == "thought"]
    errors = tuple(f"{e.get('code', 'error')}: {e.get('message', '')}" for e in data.get("errors") or [])
    return Snapshot(
        id=str(data["id"]),
        status=str(data.get("status", "")),
        text="\n\n".join(p for p in parts if isinstance(p, str)),
        citations=tuple(citations),
        usage=_usage(data.get("usage")),
        errors=errors,
        last_thought=next((t for t in reversed(thoughts) if t), None),
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        parts=tuple(parts),
    )


def _usage(raw: Any) -> dict[str, Any]:
    """The token totals and the grounding counts; anything else the API adds is left out."""
    if not isinstance(raw, dict):
        return {}
    usage: dict[str, Any] = {k: int(v) for k, v in raw.items() if k.startswith("total_") and _is_int(v)}
    counts = raw.get("grounding_tool_count")
    if isinstance(counts, list):
        usage["grounding_tool_count"] = [
            {"type": str(c.get("type")), "count": int(c["count"])}
            for c in counts
            if isinstance(c, dict) and _is_int(c.get("count"))
        ]
    return usage


def _output(steps: list[dict[str, Any]]) -> tuple[list[str | Image], list[Citation]]:
    parts: list[str | Image] = []
    citations: list[Citation] = []
    for step in steps:
        if step.get("type") != "model_output":
            continue
        for block in step.get("content") or []:
            if block.get("type") == "image":
                parts.append(Image(str(block.get("data") or ""), block.get("mime_type")))
            elif block.get("type") == "text":
                parts.append(str(block.get("text", "")))
                citations += _citations(block)
    return parts, citations


def _citations(block: dict[str, Any]) -> list[Citation]:
    return [
        Citation(url=str(note["url"]), title=note.get("title"))
        for note in block.get("annotations") or []
        if note.get("type") == "url_citation" and note.get("url")
    ]


def _summary_text(step: dict[str, Any]) -> str:
    parts = [str(s.get("text", "")) for s in step.get("summary") or [] if s.get("type") == "text"]
    return " ".join(p for p in parts if p).strip()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
