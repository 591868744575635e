"""Charts of a report: checked, numbered, written beside the report and referenced where they appeared.

Deep research returns charts as `image` content blocks (base64 `data` and `mime_type`) inside its model output
when `agent_config.visualization` is "auto" (Google's docs; SDK `ImageContent`). A chart whose data is not valid
base64, whose type we cannot name, or whose bytes are not of that type is skipped with a note in the report:
bad data costs that chart, never the job.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from research_runner.snapshot import Image

# Types a browser and a Markdown viewer show, with the bytes each file starts with.
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}
SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff", "image/gif": b"GIF8",
              "image/webp": b"RIFF"}  # fmt: skip
MAX_CHART_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Chart:
    """One chart of a report: its bytes and file name, or why it could not be kept."""

    number: int
    mime_type: str | None
    data: bytes | None = None
    note: str | None = None

    @property
    def filename(self) -> str | None:
        return f"figure-{self.number}{EXTENSIONS[self.mime_type]}" if self.data and self.mime_type else None

    def markdown(self, folder: str) -> str:
        """The report's reference to the chart, relative to the report file; or the note saying why not."""
        if self.filename is None:
            return f"> Figure {self.number} could not be kept: {self.note}."
        return f"![Figure {self.number}](<{folder}/{self.filename}>)"


def decode(number: int, image: Image) -> Chart:
    problem = _type_problem(image.mime_type)
    if problem:
        return Chart(number, image.mime_type, note=problem)
    try:
        data = base64.b64decode(image.data, validate=True)
    except (binascii.Error, ValueError):
        return Chart(number, image.mime_type, note="its data is not valid base64")
    assert image.mime_type is not None
    if not data.startswith(SIGNATURES[image.mime_type]):
        return Chart(number, image.mime_type, note=f"its bytes are not a {image.mime_type} image")
    if len(data) > MAX_CHART_BYTES:
        return Chart(number, image.mime_type, note=f"it is larger than {MAX_CHART_BYTES // 2**20} MiB")
    return Chart(number, image.mime_type, data=data)


def _type_problem(mime_type: str | None) -> str | None:
    if not mime_type:
        return "it came without a mime_type"
    if mime_type not in EXTENSIONS:
        return f"its type {mime_type[:60]!r} is not one of {', '.join(EXTENSIONS)}"
    return None


def folder_of(report_filename: str) -> str:
    """The folder beside a report that holds its charts: the report's file name without `.md`."""
    return report_filename.removesuffix(".md")
