"""Report rendering: front matter, title, one numbered de-duplicated Sources list, safe names, atomic writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import frontmatter
import pytest
from markdown_it import MarkdownIt

from research_runner import reports
from research_runner.models import Job
from research_runner.snapshot import Citation, Snapshot, snapshot_from_json

# A completed deep-research interaction that the SDK parses strictly (copied from shared/reference).
REFERENCE = Path(__file__).parent / "data" / "interaction-completed.json"
CREATED = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def job(question: str = "Research the history of Google TPUs.") -> Job:
    return Job(
        id="0123456789abcdef0123456789abcdef",
        question=question,
        agent="deep-research-preview-04-2026",
        interaction_id="v1_abc",
        created_at=CREATED,
        submitted_at=CREATED,
    )


@pytest.mark.parametrize(
    ("question", "slug"),
    [
        ("Research the history of Google TPUs.", "research-the-history-of-google-tpus"),
        ("../../etc/passwd; rm -rf /", "etc-passwd-rm-rf"),
        ("Café au lait — Ünïcödé?", "cafe-au-lait-unicode"),
        ("日本の半導体", "research"),
        ("x" * 300, "x" * reports.SLUG_MAX_CHARS),
    ],
)
def test_slugs_are_safe_filenames(question: str, slug: str) -> None:
    assert reports.slugify(question) == slug
    assert reports.report_filename(job(question)) == f"2026-06-01-{slug}-01234567.md"


def test_sources_are_numbered_once_per_url_in_order_of_first_use() -> None:
    text = "# T\n\nA [1] B [2] C [1]\n\n## Sources\n\n1. agent's own"
    snapshot = Snapshot(
        id="i",
        status="completed",
        text=text,
        citations=(
            Citation("https://a.example/x", None),
            Citation("https://b.example/y", "B"),
            Citation("https://a.example/x", "A title"),
        ),
    )
    report = reports.render(job(), snapshot, CREATED)
    assert report.markdown.count("## Sources") == 1 and "agent's own" not in report.markdown
    assert report.markdown.endswith(
        "## Sources\n\n1. [A title](<https://a.example/x>)\n2. [B](<https://b.example/y>)\n"
    )


def test_report_from_the_reference_interaction() -> None:
    snapshot = snapshot_from_json(json.loads(REFERENCE.read_text()))
    finished = datetime(2026, 6, 1, 10, 14, 32, tzinfo=UTC)
    report = reports.render(job(), snapshot, finished)
    post = frontmatter.loads(report.markdown)
    assert report.title == post["title"] == "History of Google TPUs"
    assert post["job_id"] == "0123456789abcdef0123456789abcdef" and post["interaction_id"] == "v1_abc"
    assert post["status"] == "completed" and post["duration_seconds"] == 872.0
    assert cast(dict[str, Any], post["usage"])["total_tokens"] == 525699
    assert post.content.startswith("# History of Google TPUs\n\nGoogle announced the first TPU in 2016 [1]")
    assert "1. [Introduction to Cloud TPU](<https://cloud.google.com/tpu/docs/intro-to-tpu>)" in post.content
    assert snapshot.last_thought == "Planning: gather TPU generations v1-v7..."


def test_a_text_without_heading_gets_the_question_as_title() -> None:
    report = reports.render(job("What is: a 'test'?"), Snapshot(id="i", status="incomplete", text="partial"), CREATED)
    post = frontmatter.loads(report.markdown)
    assert post["question"] == "What is: a 'test'?" and post["status"] == "incomplete"
    assert post.content == "# What is: a 'test'?\n\npartial"


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "r.md"
    target.write_text("old")


def cited(text: str) -> Snapshot:
    return Snapshot(id="i", status="completed", text=text, citations=(Citation("https://a.example/x", "A"),))


def test_a_sources_heading_followed_by_more_sections_keeps_them() -> None:
    text = (
        "# T\n\nBody [1].\n\n### Sources\n\n1. agent's own\n\n### Limitations\n\nSmall sample.\n\n"
        "### Recommendation\n\nBuy TPUs."
    )
    body = frontmatter.loads(reports.render(job(), cited(text), CREATED).markdown).content
    assert body == text + "\n\n## Sources\n\n1. [A](<https://a.example/x>)"


def test_a_five_megabyte_report_keeps_every_byte_but_its_trailing_sources() -> None:
    middle = "### Sources\n\n1. early list\n\n### Limitations\n\n" + "A long paragraph of findings [1].\n\n" * 150_000
    text = f"# Big\n\n{middle}### Recommendation\n\nDone."
    assert len(text) > 5_000_000
    body = frontmatter.loads(reports.render(job(), cited(text + "\n\n### References\n\n- [x](y)\n"), CREATED).markdown)
    assert body.content == text + "\n\n## Sources\n\n1. [A](<https://a.example/x>)"


def test_the_title_line_the_runner_adds_cannot_inject_markup() -> None:
    question = "Line one\r\n---\ntitle: x\n<script>alert(1)</script>\u2028# [link](javascript:x) *em*"
    report = reports.render(job(question), Snapshot(id="i", status="completed", text="partial"), CREATED)
    post = frontmatter.loads(report.markdown)
    assert post["title"] == report.title == reports.one_line(question)
    first = post.content.split("\n", 1)[0]
    assert first == "# Line one --- title: x &lt;script&gt;alert(1)&lt;/script&gt; # \\[link\\](javascript:x) \\*em\\*"
    tokens = MarkdownIt().parse(post.content)
    assert [t.type for t in tokens if t.type.endswith("_open")] == ["heading_open", "paragraph_open"]
    heading = tokens[1].children or []
    assert [child.type for child in heading] == ["text"] and heading[0].content == reports.one_line(question)


def test_a_model_heading_is_a_one_line_title() -> None:
    text = "#\n\nNot a title\n\n# C# on TPUs\u2028really ##\n\nBody"
    assert reports.title_of(text, "q") == "C# on TPUs really"
