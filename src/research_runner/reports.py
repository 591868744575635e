"""Turn a finished interaction into a Markdown report: front matter, the text, and numbered Sources."""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from research_runner.models import Job
from research_runner.snapshot import Citation, Snapshot

SLUG_MAX_CHARS = 60
TITLE_MAX_CHARS = 200
HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
# A sources list the agent wrote itself; ours, built from the citations, replaces it.
TRAILING_SOURCES = re.compile(
    r"\n#{1,3}\s*(sources|references|works cited|bibliography)\s*:?\s*\n(?:(?!\n#{1,2}\s).)*\Z",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class Report:
    title: str
    markdown: str
    filename: str


def slugify(text: str) -> str:
    """A filename-safe, lower-case ASCII slug; never empty, never a path."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:SLUG_MAX_CHARS].rstrip("-") or "research"


def title_of(text: str, question: str) -> str:
    match = HEADING.search(text)
    title = match.group(1) if match else " ".join(question.split())
    return title[:TITLE_MAX_CHARS]


def sources(citations: tuple[Citation, ...]) -> list[Citation]:
    """Citations in order of first use, one per URL."""
    seen: dict[str, Citation] = {}
    for citation in citations:
        if citation.url not in seen or not seen[citation.url].title:
            seen[citation.url] = Citation(citation.url, citation.title or seen.get(citation.url, citation).title)
    return list(seen.values())


def report_filename(job: Job) -> str:
    return f"{job.created_at:%Y-%m-%d}-{slugify(job.question)}-{job.short_id}.md"


def render(job: Job, snapshot: Snapshot, finished_at: datetime) -> Report:
    title = title_of(snapshot.text, job.question)
    body = snapshot.text.strip()
    listed = sources(snapshot.citations)
    if listed:
        body = TRAILING_SOURCES.sub("", body).rstrip()
    if not HEADING.search(body):
        body = f"# {title}\n\n{body}"
    parts = [_front_matter(job, snapshot, title, finished_at), body]
    if listed:
        parts.append("## Sources\n\n" + "\n".join(_source_line(i, c) for i, c in enumerate(listed, 1)))
    return Report(title=title, markdown="\n\n".join(parts) + "\n", filename=report_filename(job))


def _source_line(number: int, citation: Citation) -> str:
    label = (citation.title or citation.url).replace("[", "(").replace("]", ")")
    return f"{number}. [{label}](<{citation.url}>)"


def _front_matter(job: Job, snapshot: Snapshot, title: str, finished_at: datetime) -> str:
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
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---"


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename, so readers never see half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".md", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(report: Report, reports_dir: Path) -> Path:
    path = reports_dir / report.filename
    write_atomically(path, report.markdown)
    return path
