"""What the runner reads from an interaction's JSON (the API's shape, tests/data/interaction-completed.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from research_runner.snapshot import Citation, snapshot_from_json

RECORDED = Path(__file__).parent.parent / "data" / "interaction-completed.json"


def text(value: str, *citations: dict[str, Any]) -> dict[str, Any]:
    return {"type": "text", "text": value, "annotations": list(citations)}


def url(link: str, title: str | None = None) -> dict[str, Any]:
    return {"type": "url_citation", "url": link, "title": title, "start_index": 0, "end_index": 1}


INTERACTION = {
    "id": "v1_abc",
    "status": "completed",
    "labels": {"research_runner_job": "job-1", "n": 3},
    "usage": {"total_tokens": 1200, "total_input_tokens": 200, "input_tokens_by_modality": [], "total_cost": "x",
              "total_flag": True, "cached_tokens": 5},
    "steps": [
        {"type": "user_input", "content": [text("the question")]},
        {"type": "thought", "summary": [{"type": "text", "text": "Planning"}, {"type": "text", "text": "the search"}]},
        {"type": "google_search_call", "arguments": {"queries": ["q"]}},
        {"type": "a_step_type_from_the_future", "content": [text("not report text")]},
        {"type": "model_output", "content": [
            text("# Title", url("https://a.example", "A"), {"type": "place_citation", "url": "https://map"}),
            {"type": "image", "data": "AAAA", "mime_type": "image/png"},
            text("Body", url("https://b.example"), url("")),
        ]},
        {"type": "thought", "summary": []},
        {"type": "model_output", "content": [text("Closing")]},
    ],
    "errors": [{"code": "partial", "message": "one source failed"}, {"message": "no code"}],
}  # fmt: skip


def test_a_full_interaction_is_read() -> None:
    snap = snapshot_from_json(INTERACTION)
    assert snap.id == "v1_abc"
    assert snap.status == "completed"
    assert snap.text == "# Title\n\nBody\n\nClosing"  # text blocks of model outputs only, joined by blank lines
    assert snap.citations == (Citation("https://a.example", "A"), Citation("https://b.example"))
    assert snap.usage == {"total_tokens": 1200, "total_input_tokens": 200}  # integer totals only
    assert snap.labels == {"research_runner_job": "job-1", "n": "3"}
    assert snap.errors == ("partial: one source failed", "error: no code")
    assert snap.last_thought == "Planning the search"  # the latest thought that says something


@pytest.mark.parametrize(
    ("data", "field", "expected"),
    [
        ({"id": "i", "status": "in_progress"}, "text", ""),
        ({"id": "i", "status": "in_progress", "steps": None, "usage": None, "labels": None}, "usage", {}),
        ({"id": "i"}, "status", ""),
        ({"id": 7, "status": "queued"}, "id", "7"),
        ({"id": "i", "steps": [{"type": "thought"}]}, "last_thought", None),
        ({"id": "i", "steps": [{"type": "model_output", "content": [{"type": "text"}]}]}, "text", ""),
    ],
)
def test_missing_parts_read_as_empty(data: dict[str, Any], field: str, expected: object) -> None:
    assert getattr(snapshot_from_json(data), field) == expected


def test_the_recorded_interaction_is_read() -> None:
    data = json.loads(RECORDED.read_text())
    snap = snapshot_from_json(data)
    assert snap.id == data["id"]
    assert snap.status == "completed"
    assert snap.text.strip()
    assert all(c.url.startswith("http") for c in snap.citations)
