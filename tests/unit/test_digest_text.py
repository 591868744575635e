"""User and model text in a batch digest stays one literal line: no headings, front matter or HTML get in."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from research_runner import batches
from research_runner.exceptions import InvalidInput
from research_runner.models import Batch, Job

WHEN = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
EVIL = "evil\n---\ntitle: x\n# Heading\r<script>alert(1)</script>\u2028[a](javascript:x) *b* `c` | d"


def digest_of(tmp_path: Path) -> str:
    batch = Batch(name=EVIL, created_at=WHEN)
    job = Job(
        question=EVIL,
        agent="deep-research-preview-04-2026",
        status="completed",
        created_at=WHEN,
        report_path=str(tmp_path / "r.md"),
        report_title=EVIL,
        error=EVIL,
        report_markdown="---\ntitle: t\n---\n# T\n\nFirst <img src=x onerror=alert(1)> paragraph.\n",
    )
    return batches.digest(batch, [job], tmp_path / "batches", WHEN)


def test_injected_markup_stays_literal_text(tmp_path: Path) -> None:
    digest = digest_of(tmp_path)
    tokens = MarkdownIt().parse(digest)
    assert not [t for t in tokens if t.type.startswith(("html", "hr", "front"))]
    inline = [child for t in tokens if t.type == "inline" for child in t.children or []]
    assert not [c for c in inline if c.type.startswith(("html", "em_", "softbreak", "hardbreak"))]
    assert all(re.fullmatch("[0-9a-f]{32}", c.content) for c in inline if c.type == "code_inline")  # only ids
    links = [c.attrs["href"] for c in inline if c.type == "link_open"]
    assert links == ["../r.md"]
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert len(headings) == 2 and all("\n" not in h for h in headings)
    flat = " ".join(EVIL.split())
    texts = ["".join(c.content for c in tokens[i + 1].children or []) for i, t in enumerate(tokens) if t.nesting == 1]
    assert texts[0] == f"Batch: {flat}" and f"1. {flat}" in texts
    assert "> First &lt;img src=x onerror=alert(1)> paragraph." in digest


@pytest.mark.parametrize("name", ["", "   ", "\n\t", "x" * (batches.NAME_MAX_CHARS + 1)])
def test_a_blank_or_overlong_batch_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="a batch name needs 1 to 200 characters, not only spaces"):
        batches.check_batch_name(name)


def test_a_batch_name_is_stored_stripped() -> None:
    assert batches.check_batch_name("  nightly run \n") == "nightly run"
