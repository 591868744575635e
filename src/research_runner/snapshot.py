"""What the runner reads from an interaction's JSON: status, report text, citations, usage, thoughts.

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
class Snapshot:
    """What the runner needs from an interaction, read from its JSON."""

    id: str
    status: str
    text: str = ""
    citations: tuple[Citation, ...] = ()
    usage: dict[str, int] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    last_thought: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def snapshot_from_json(data: dict[str, Any]) -> Snapshot:
    steps = data.get("steps") or []
    texts, citations = _output(steps)
    thoughts = [_summary_text(s) for s in steps if s.get("type") == "thought"]
    usage = {k: int(v) for k, v in (data.get("usage") or {}).items() if k.startswith("total_") and _is_int(v)}
    errors = tuple(f"{e.get('code', 'error')}: {e.get('message', '')}" for e in data.get("errors") or [])
    return Snapshot(
        id=str(data["id"]),
        status=str(data.get("status", "")),
        text="\n\n".join(texts),
        citations=tuple(citations),
        usage=usage,
        errors=errors,
        last_thought=next((t for t in reversed(thoughts) if t), None),
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
    )


def _output(steps: list[dict[str, Any]]) -> tuple[list[str], list[Citation]]:
    texts: list[str] = []
    citations: list[Citation] = []
    for step in steps:
        if step.get("type") != "model_output":
            continue
        for block in step.get("content") or []:
            if block.get("type") != "text":
                continue
            texts.append(str(block.get("text", "")))
            for note in block.get("annotations") or []:
                if note.get("type") == "url_citation" and note.get("url"):
                    citations.append(Citation(url=str(note["url"]), title=note.get("title")))
    return texts, citations


def _summary_text(step: dict[str, Any]) -> str:
    parts = [str(s.get("text", "")) for s in step.get("summary") or [] if s.get("type") == "text"]
    return " ".join(p for p in parts if p).strip()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
