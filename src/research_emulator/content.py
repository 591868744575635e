"""Deterministic fake research content: thought summaries, searches, the Markdown report and usage.

Everything is drawn from the random.Random passed in, so the same seed gives the same text. Sources use
reserved example domains only. Report text is built piece by piece so citation offsets are exact.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from .charts import chart_block

EMULATION_NOTE = (
    "This report was emulated by the research-runner Interactions API emulator: its sources and "
    "findings are placeholders, not research."
)

_DOMAINS = (
    "https://example.com",
    "https://www.example.org",
    "https://example.net",
    "https://research.example",
    "https://news.example",
    "https://docs.example",
)
_SOURCE_TITLES = (
    "An overview of {t}",
    "{T}: a primer",
    "What changed in {t}",
    "Field notes on {t}",
    "{T} in numbers",
    "A critical look at {t}",
    "Frequently asked questions about {t}",
)
_FINDINGS = (
    "Early work on {t} focused on a small set of well documented cases",
    "Most sources agree that {t} developed in several distinct phases",
    "Reported figures for {t} vary by a factor of two between sources",
    "Recent analyses of {t} emphasise cost and reliability over raw capability",
    "Practitioners describe {t} as easier to adopt than commonly assumed",
    "Regulatory attention to {t} has increased over the last few years",
    "Independent reviews of {t} point to gaps in the public data",
)
_ERRORS = (
    ("internal", "The research agent stopped after an internal error (emulated)."),
    ("unavailable", "A tool the research agent depends on was unavailable (emulated)."),
    ("deadline_exceeded", "The research agent ran past its deadline (emulated)."),
)


@dataclass(slots=True)
class Report:
    """Model output in order: Markdown text blocks (with url_citation annotations) and chart image blocks.

    Annotation offsets index into their own text block and count UTF-8 bytes, not characters: the SDK's
    `URLCitation.start_index` is "measured in bytes" (google-genai 3.6.1 `interactions/urlcitation.py`).
    """

    blocks: list[dict[str, Any]] = field(default_factory=list)
    _text: str = ""
    _bytes: int = 0
    _annotations: list[dict[str, Any]] = field(default_factory=list)

    def add(self, piece: str) -> None:
        self._text += piece
        self._bytes += len(piece.encode())

    def cite(self, number: int, source: dict[str, str]) -> None:
        start = self._bytes
        self.add(f"[{number}]")
        self._annotations.append(
            {
                "type": "url_citation",
                "url": source["url"],
                "title": source["title"],
                "start_index": start,
                "end_index": self._bytes,
            }
        )

    def image(self, block: dict[str, Any]) -> None:
        """End the current text block and put an image after it, so text continues in a new block."""
        self.blocks += self._open_block()
        self._text, self._bytes, self._annotations = "", 0, []
        self.blocks.append(block)

    def _open_block(self) -> list[dict[str, Any]]:
        if not self._text:
            return []
        return [{"type": "text", "text": self._text, "annotations": list(self._annotations)}]

    def content_blocks(self) -> list[dict[str, Any]]:
        return [*self.blocks, *self._open_block()]

    @property
    def text(self) -> str:
        """All text of the output, blocks joined (images left out)."""
        return "".join(b["text"] for b in self.content_blocks() if b["type"] == "text")


@dataclass(slots=True)
class Content:
    """All generated material for one interaction."""

    title: str
    topic: str
    sources: list[dict[str, str]]
    thoughts: list[str]
    # Each search: (index of the thought it follows, queries).
    searches: list[tuple[int, list[str]]]
    report: Report
    partial: Report
    plan: Report
    usage: dict[str, Any]
    error: tuple[str, str]


def title_from(question: str) -> str:
    """First line / sentence of the question, trimmed, as a report title."""
    text = " ".join(question.split())
    if not text:
        return "Untitled research question"
    first = re.split(r"(?<=[.?!])\s", text, maxsplit=1)[0].rstrip(".?! ")
    if len(first) > 90:
        first = first[:87].rsplit(" ", 1)[0] + "..."
    return first[:1].upper() + first[1:]


def _topic(title: str) -> str:
    topic = re.sub(r"^(research|investigate|explain|summari[sz]e|describe|analy[sz]e)\s+", "", title, flags=re.I)
    topic = topic.removeprefix("the ").removeprefix("The ")
    return topic[:60] or "the question"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "topic"


def _sources(rng: random.Random, topic: str, count: int) -> list[dict[str, str]]:
    domains = rng.sample(_DOMAINS, k=min(count, len(_DOMAINS)))
    titles = rng.sample(_SOURCE_TITLES, k=count)
    sources = []
    for i in range(count):
        url = f"{domains[i % len(domains)]}/{_slug(topic)}/{rng.randrange(1000, 9999)}"
        title = titles[i].format(t=topic, T=topic[:1].upper() + topic[1:])
        sources.append({"url": url, "title": title})
    return sources


@dataclass(frozen=True, slots=True)
class Extra:
    """What a continuation or attachments add to a report: a title, earlier sources, Markdown sections."""

    title: str | None = None
    sources: tuple[dict[str, str], ...] = ()
    # Each a complete Markdown section ("## Heading\n\nbody\n\n"), placed right after the summary.
    sections: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Charts:
    """How many charts a report carries, and whether the first is bad data (see charts.chart_block)."""

    count: int = 0
    broken: str | None = None


_HEADINGS = ("Background", "Key findings", "Disagreements between sources", "Open questions")


def _write_report(
    rng: random.Random,
    title: str,
    topic: str,
    sources: list[dict[str, str]],
    sections: int,
    charts: Charts = Charts(),
    extra: Extra = Extra(),
) -> Report:
    findings = rng.sample(_FINDINGS, k=len(_FINDINGS))
    # Charts draw from their own generator so asking for more or fewer never changes the text.
    chart_rng = random.Random(rng.random())
    report = Report()
    report.add(f"# {title}\n\n> {EMULATION_NOTE}\n\n## Summary\n\n")
    report.add(f"This report looks at {topic} using {len(sources)} sources. {findings[0].format(t=topic)} ")
    report.cite(1, sources[0])
    report.add(".\n\n")
    for section in extra.sections:
        report.add(section)
    placed = _place_chart(report, chart_rng, topic, 0, charts)
    for number, heading in enumerate(_HEADINGS[: max(0, sections - 1)], start=1):
        first, second = number % len(sources), (number + 2) % len(sources)
        report.add(f"## {heading}\n\n{findings[number].format(t=topic)} ")
        report.cite(first + 1, sources[first])
        report.add(f". {findings[(number + 3) % len(findings)].format(t=topic)} ")
        report.cite(second + 1, sources[second])
        report.add(".\n\n")
        placed += _place_chart(report, chart_rng, topic, placed, charts)
    while placed < charts.count:  # more charts than sections: the rest go together before the summary line
        placed += _place_chart(report, chart_rng, topic, placed, charts)
    # Cite source 1 again so clients have to de-duplicate repeated URLs.
    report.add("Taken together, the sources support the summary above ")
    report.cite(1, sources[0])
    report.add(".\n\n## Sources\n\n")
    for number, source in enumerate(sources, start=1):
        report.add(f"{number}. [{source['title']}]({source['url']})\n")
    return report


def _place_chart(report: Report, rng: random.Random, topic: str, placed: int, charts: Charts) -> int:
    """Put chart number `placed + 1` here (caption in the text before it) if one is still due; return 1 or 0."""
    if placed >= charts.count:
        return 0
    report.add(f"*Figure {placed + 1}: reported figures for {topic}, by source (emulated data).*\n\n")
    report.image(chart_block(rng, charts.broken if placed == 0 else None))
    return 1


def generate(
    question: str, rng: random.Random, thought_count: int, charts: Charts = Charts(), extra: Extra = Extra()
) -> Content:
    topic = _topic(title_from(question))
    title = extra.title or title_from(question)
    drawn = _sources(rng, topic, rng.randint(4, 6))
    # A continuation cites the earlier report's sources first, so its use of them is visible.
    sources = [*extra.sources, *drawn[: max(0, 4 - len(extra.sources))]] if extra.sources else drawn
    report = _write_report(rng, title, topic, sources, sections=5, charts=charts, extra=extra)
    partial = _write_report(rng, title, topic, sources, sections=2, extra=extra)
    partial.add("\n_The research stopped before the report was finished; this text is partial._\n")
    plan = Report()
    plan.add(f"# Research plan: {title}\n\n> {EMULATION_NOTE}\n\n")
    for step, what in enumerate(("Background and definitions", "Key findings", "Open questions"), 1):
        plan.add(f"{step}. {what} on {topic}\n")
    plan.add("\nPlease confirm or edit this plan to continue.\n")
    return Content(
        title=title,
        topic=topic,
        sources=sources,
        thoughts=_thoughts(rng, topic, sources, thought_count),
        searches=[(0, [topic, f"{topic} overview"]), (min(1, thought_count - 1), [f"{topic} recent analysis"])],
        report=report,
        partial=partial,
        plan=plan,
        usage=_usage(rng, len(report.text), searches=2),
        error=rng.choice(_ERRORS),
    )


def _thoughts(rng: random.Random, topic: str, sources: list[dict[str, str]], count: int) -> list[str]:
    first = f'Planning: breaking "{topic}" into background, findings and open questions.'
    last = f"Synthesising: drafting the report on {topic} from {len(sources)} sources."
    middle = [
        f"Searching for {topic} overviews and recent analyses.",
        f'Reading "{sources[0]["title"]}" on {sources[0]["url"].split("/")[2]}.',
        f"Comparing figures reported for {topic} across sources.",
        f'Reading "{sources[1]["title"]}" on {sources[1]["url"].split("/")[2]}.',
        f"Checking where sources on {topic} disagree.",
    ]
    if count == 1:
        return [first]
    # A pass number keeps summaries distinct when more thoughts are asked for than there are templates.
    picked = [
        middle[i % len(middle)] + (f" (pass {i // len(middle) + 1})" if i >= len(middle) else "")
        for i in range(count - 2)
    ]
    return [first, *picked, last]


def _usage(rng: random.Random, report_chars: int, searches: int) -> dict[str, Any]:
    total_input = rng.randint(250_000, 900_000)
    output = report_chars // 4 + rng.randint(500, 2_000)
    thought = rng.randint(4_000, 12_000)
    tool_use = rng.randint(40_000, 120_000)
    cached = rng.randint(0, total_input // 3)
    return {
        "total_input_tokens": total_input,
        "total_output_tokens": output,
        "total_thought_tokens": thought,
        "total_tool_use_tokens": tool_use,
        "total_cached_tokens": cached,
        "total_tokens": total_input + output + thought + tool_use,
        "input_tokens_by_modality": [{"modality": "text", "tokens": total_input}],
        "grounding_tool_count": [{"type": "google_search", "count": searches}],
    }


def model_answer(question: str, model: str, rng: random.Random, context: str = "") -> tuple[str, dict[str, Any]]:
    """Short answer text and usage for a plain `model` interaction; `context` is what it builds on."""
    text = (
        f"Emulated answer from {model} to: {title_from(question)}. {context}"
        f"{EMULATION_NOTE} (reply #{rng.randrange(1000, 9999)})"
    )
    words = len(question.split())
    usage = {
        "total_input_tokens": words * 2,
        "total_output_tokens": len(text) // 4,
        "total_thought_tokens": 0,
        "total_tool_use_tokens": 0,
        "total_cached_tokens": 0,
        "total_tokens": words * 2 + len(text) // 4,
    }
    return text, usage
