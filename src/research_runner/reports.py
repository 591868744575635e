"""Turn a finished interaction into a Markdown report: front matter, the text, and numbered Sources."""

from __future__ import annotations

import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from research_runner import charts
from research_runner.models import Job
from research_runner.snapshot import Citation, Image, Snapshot

SLUG_MAX_CHARS = 60
TITLE_MAX_CHARS = 200
HEADING = re.compile(r"^#[ \t]+(\S.*)$", re.MULTILINE)
# A sources list the agent wrote itself; ours, built from the citations, replaces it. Matched one line at a time
# (see without_trailing_sources), so no pattern ever spans the text and the work stays linear in its length.
SOURCES_HEADING = re.compile(r" {0,3}#{1,3}[ \t]*(?:sources|references|works cited|bibliography)[ \t]*:?[ \t#]*", re.I)
LIST_ITEM = re.compile(r"(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")
LINK_STARTS = ("[", "<http", "http://", "https://")
# Characters that would start Markdown or HTML markup inside a line of text we did not write.
INLINE_ESCAPES = str.maketrans(
    {"\\": "\\\\", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]", "~": "\\~", "|": "\\|"}
    | {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
)


# Read once at import (single-threaded): os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@dataclass(frozen=True)
class Report:
    title: str
    markdown: str
    filename: str
    charts: tuple[charts.Chart, ...] = ()

    @property
    def chart_folder(self) -> str:
        return charts.folder_of(self.filename)


def slugify(text: str) -> str:
    """A filename-safe, lower-case ASCII slug; never empty, never a path."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:SLUG_MAX_CHARS].rstrip("-") or "research"


def title_of(text: str, question: str) -> str:
    """The text's first level-1 heading, else the question: one line, at most TITLE_MAX_CHARS."""
    match = HEADING.search(text)
    title = one_line(_without_closing_hashes(match.group(1)) if match else question)
    return title[:TITLE_MAX_CHARS]


def _without_closing_hashes(heading: str) -> str:
    # CommonMark: a closing run of # only counts after a space ("# C#" is titled "C#"). Done without a regex,
    # whose backtracking over long runs of spaces would be quadratic.
    text = heading.rstrip()
    bare = text.rstrip("#")
    return bare.rstrip() if bare != text and bare[-1:] in (" ", "\t") else text


def one_line(text: str) -> str:
    """Every run of whitespace, line breaks included (CR, U+2028...), as one space; no leading or trailing space."""
    return " ".join(text.split())


def inline_text(text: str) -> str:
    """Text we did not write, as one line of Markdown that renders literally: no headings, front matter, links,
    emphasis or raw HTML can start inside it."""
    return one_line(text).translate(INLINE_ESCAPES)


def without_trailing_sources(text: str) -> str:
    """`text` minus the sources list the agent ended it with, if any; else `text` unchanged.

    Only a trailing list is removed: a level 1-3 heading named Sources, References, Works cited or Bibliography
    followed by nothing but list items (with their indented continuation lines), links and blank lines up to the
    end. The result is always a prefix of `text`, so the model's other text is kept byte for byte. Lines are
    read backwards from the end, each once.
    """
    end, continued = len(text), False
    while True:
        start = text.rfind("\n", 0, end) + 1
        line = text[start:end].rstrip("\r")
        if SOURCES_HEADING.fullmatch(line):
            return text if continued else text[:start]
        kind = _source_line_kind(line)
        if kind is None or start == 0:
            return text
        continued = kind == "continuation" or (continued and kind == "blank")
        end = start - 1


def _source_line_kind(line: str) -> str | None:
    """What a line of a sources list is: "blank", "item" (a list item or link), "continuation" (indented text that
    belongs to the item above it), or None: not part of a list."""
    stripped = line.strip()
    if not stripped:
        return "blank"
    if LIST_ITEM.match(stripped) or stripped.startswith(LINK_STARTS):
        return "item"
    return "continuation" if line.startswith(("  ", "\t")) else None


def sources(citations: tuple[Citation, ...]) -> list[Citation]:
    """Citations in order of first use, one per URL."""
    seen: dict[str, Citation] = {}
    for citation in citations:
        if citation.url not in seen or not seen[citation.url].title:
            seen[citation.url] = Citation(citation.url, citation.title or seen.get(citation.url, citation).title)
    return list(seen.values())


def report_filename(job: Job) -> str:
    return f"{job.created_at:%Y-%m-%d}-{slugify(job.question)}-{job.short_id}.md"


def render(job: Job, snapshot: Snapshot, finished_at: datetime, cost: float | None = None) -> Report:
    title = title_of(snapshot.text, job.question)
    filename = report_filename(job)
    found = _charts(snapshot)
    body = _body(snapshot, found, charts.folder_of(filename))
    listed = sources(snapshot.citations)
    if listed:
        body = without_trailing_sources(body).rstrip()
    if not HEADING.search(body):
        body = f"# {inline_text(title)}\n\n{body}".rstrip()
    parts = [_front_matter(job, snapshot, title, finished_at, found, cost), body]
    if listed:
        parts.append("## Sources\n\n" + "\n".join(_source_line(i, c) for i, c in enumerate(listed, 1)))
    return Report(title=title, markdown="\n\n".join(parts) + "\n", filename=filename, charts=found)


def _charts(snapshot: Snapshot) -> tuple[charts.Chart, ...]:
    images = [part for part in snapshot.parts if isinstance(part, Image)]
    return tuple(charts.decode(number, image) for number, image in enumerate(images, 1))


def _body(snapshot: Snapshot, found: tuple[charts.Chart, ...], folder: str) -> str:
    """The model's text blocks with each chart's reference (or note) where the chart appeared."""
    pieces, numbered = [], iter(found)
    for part in snapshot.parts:
        pieces.append(part.strip() if isinstance(part, str) else next(numbered).markdown(folder))
    return "\n\n".join(piece for piece in pieces if piece) if pieces else snapshot.text.strip()


def _source_line(number: int, citation: Citation) -> str:
    label = (citation.title or citation.url).replace("[", "(").replace("]", ")")
    return f"{number}. [{label}](<{citation.url}>)"


def _front_matter(
    job: Job, snapshot: Snapshot, title: str, finished_at: datetime, found: tuple[charts.Chart, ...],
    cost: float | None,
) -> str:  # fmt: skip
    meta: dict[str, Any] = {
        "title": title,
        "job_id": job.id,
        "interaction_id": job.interaction_id,
        "question": job.question,
        "agent": job.agent,
        "status": snapshot.status,
        "created": job.created_at.isoformat(),
        "submitted": job.submitted_at.isoformat() if job.submitted_at else None,
        "finished": finished_at.isoformat(),
        "duration_seconds": round((finished_at - job.created_at).total_seconds(), 1),
        "usage": dict(snapshot.usage),
        "searches": snapshot.searches,
        "estimated_cost_usd": cost,
        "figures": sum(1 for chart in found if chart.filename),
    }
    if any(chart.note for chart in found):
        meta["figures_skipped"] = sum(1 for chart in found if chart.note)
    if job.files:
        meta["files"] = json.loads(job.files)
    import yaml  # only a finished job needs it; every command would pay ~15 ms to import it

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---"


def write_atomically(path: Path, content: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename, so readers never see half a report.

    The file gets the permissions any file the user writes gets (mkstemp alone would make it private).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.encode() if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(report: Report, reports_dir: Path) -> tuple[Path, list[Path]]:
    """Write the charts, then the report that refers to them; returns (report path, chart paths)."""
    written = write_charts(report.charts, reports_dir / report.chart_folder)
    path = reports_dir / report.filename
    write_atomically(path, report.markdown)
    return path, written


def write_charts(found: Iterable[charts.Chart], folder: Path) -> list[Path]:
    written = []
    for chart in found:
        if chart.data is not None and chart.filename is not None:
            write_atomically(folder / chart.filename, chart.data)
            written.append(folder / chart.filename)
    return written


FOLLOW_UPS_MARK = "<!-- research-runner: follow-ups -->"


def with_follow_up(markdown: str, question: str, link: str) -> str:
    """The report with a link to one more follow-up in its closing "Follow-ups" section (which we own)."""
    head, mark, tail = markdown.partition(FOLLOW_UPS_MARK)
    entries = [line for line in tail.splitlines() if line.startswith("- ")] if mark else []
    entries.append(f"- [{inline_text(question)}](<{link}>)")
    return f"{head.rstrip()}\n\n{FOLLOW_UPS_MARK}\n## Follow-ups\n\n" + "\n".join(entries) + "\n"
