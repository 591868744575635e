"""Removing the agent's own sources list: only a trailing list goes, every other byte stays (property tests)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from research_runner.reports import without_trailing_sources

SOURCE_NAMES = ("Sources", "sources", "REFERENCES", "References:", "Works cited", "Bibliography", "Sources ##")
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC", min_size=1, max_size=8)
WORDS = st.lists(WORD, min_size=1, max_size=6).map(" ".join)

# Blocks: (kind, text). The kinds the test reasons with are independent of the code under test.
sources_heading = st.tuples(st.integers(1, 3), st.sampled_from(SOURCE_NAMES)).map(
    lambda t: ("sources", "#" * t[0] + " " + t[1])
)
deep_sources_heading = st.tuples(st.integers(4, 6), st.sampled_from(SOURCE_NAMES)).map(
    lambda t: ("other", "#" * t[0] + " " + t[1])
)
other_heading = st.tuples(st.integers(1, 6), WORDS).map(lambda t: ("other", "#" * t[0] + " Part " + t[1]))
paragraph = st.lists(WORDS, min_size=1, max_size=3).map(lambda lines: ("other", "\n".join(lines)))
list_item = st.one_of(
    WORDS.map(lambda w: f"- {w}"),
    WORDS.map(lambda w: f"* [{w}](https://example.com/{w.replace(' ', '-')})"),
    st.tuples(st.integers(1, 99), WORDS).map(lambda t: f"{t[0]}. {t[1]}"),
    WORDS.map(lambda w: f"https://example.org/{w.replace(' ', '/')}"),
    WORDS.map(lambda w: f"[{w}]: https://example.net/"),
)
list_block = st.lists(
    st.tuples(list_item, st.lists(WORDS.map(lambda w: "   " + w), max_size=2)), min_size=1, max_size=4
).map(lambda items: ("list", "\n".join("\n".join([item, *more]) for item, more in items)))
block = st.one_of(sources_heading, deep_sources_heading, other_heading, paragraph, list_block)
separator = st.sampled_from(["\n", "\n\n", "\n\n\n"])


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, int]:
    """Markdown, and where its trailing sources section starts (its length if it has none)."""
    blocks = draw(st.lists(block, max_size=8))
    if draw(st.booleans()):  # often end on a sources section, the case that matters most
        blocks += [draw(sources_heading), *draw(st.lists(list_block, max_size=3))]
    seps = [draw(separator) for _ in blocks]
    text, starts = "", []
    for (_, chunk), sep in zip(blocks, seps, strict=True):
        starts.append(len(text))
        text += chunk + sep
    text += draw(st.sampled_from(["", "\n", "  \n"]))
    cut = len(text)
    for index in range(len(blocks) - 1, -1, -1):
        kind = blocks[index][0]
        if kind == "sources":
            cut = starts[index]
        if kind != "list":
            break
    return text, cut


@settings(max_examples=400)
@given(documents())
def test_only_a_trailing_sources_section_is_removed(document: tuple[str, int]) -> None:
    text, cut = document
    assert without_trailing_sources(text) == text[:cut]


# Arbitrary line soup: the output must be a prefix, and what it drops a sources heading over list lines only.
LINES = st.one_of(
    st.sampled_from(["## Sources", "### References", "#### Sources", "# Bibliography:", "", "  ", "- a", "1. b"]),
    st.sampled_from(["   continued", "[x](y)", "https://z", "text", "##Sources", "2) c", "-no", "\tx", "# T"]),
    st.text(alphabet="#- 1.[]()S\t\rsources", max_size=12),
)
LIST_LIKE = re.compile(r"\s*$|\s*([-*+]|\d+[.)])(\s|$)|\s*(\[|<http|https?://)|[ ]{2}|\t")
HEADING_LIKE = re.compile(r" {0,3}#{1,3}\s*(sources|references|works cited|bibliography)\s*:?[\s#]*", re.I)


@settings(max_examples=400)
@given(st.lists(LINES, max_size=12).map("\n".join))
def test_nothing_after_a_non_list_line_is_removed(text: str) -> None:
    result = without_trailing_sources(text)
    assert text.startswith(result)
    removed = text[len(result) :]
    if removed:
        assert result == "" or result.endswith("\n")
        heading, *rest = removed.split("\n")
        assert HEADING_LIKE.fullmatch(heading.rstrip("\r"))
        assert all(LIST_LIKE.match(line) for line in rest), removed


def test_a_sources_heading_mid_text_keeps_everything_after_it() -> None:
    text = "# T\n\nBody.\n\n### Sources\n\n1. [a](https://a)\n\n### Limitations\n\nSome.\n\n### Recommendation\n\nDo."
    assert without_trailing_sources(text) == text


def test_an_indented_line_counts_only_under_a_list_item() -> None:
    listed = "Body.\n\n## Sources\n\n1. Title\n   https://a.example\n\n   more about it\n"
    assert without_trailing_sources(listed) == "Body.\n\n"
    code = "Body.\n\n## Sources\n\n    indented code, not a list\n"
    assert without_trailing_sources(code) == code
