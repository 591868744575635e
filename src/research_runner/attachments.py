"""Files sent with a question: images and PDF documents, as content blocks of the create's `input`.

The type is read from the file's first bytes, never from its name. Limits follow Gemini's documented inline
data rules, since none are documented for Interactions: images PNG, JPEG, WEBP, HEIC or HEIF; documents PDF;
at most 20 MB of inline data per request (base64 makes it a third larger, so the raw files may total 15 MB).
Everything is checked before anything is stored.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from research_runner.exceptions import InvalidInput

MAX_REQUEST_BYTES = 20 * 1000 * 1000
MAX_TOTAL_BYTES = MAX_REQUEST_BYTES * 3 // 4 - 64 * 1024  # base64 grows data by 4/3; leave room for the rest
MAX_FILES = 10
HEIF_BRANDS = {b"heic": "image/heic", b"heix": "image/heic", b"hevc": "image/heic", b"heim": "image/heic",
               b"mif1": "image/heif", b"msf1": "image/heif"}  # fmt: skip


@dataclass(frozen=True)
class Attachment:
    name: str
    mime_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def kind(self) -> str:
        return "document" if self.mime_type == "application/pdf" else "image"

    def describe(self) -> dict[str, Any]:
        """What the report's front matter lists."""
        return {"name": self.name, "type": self.mime_type, "size": self.size, "sha256": self.sha256}

    def block(self) -> dict[str, Any]:
        """The content block (SDK `ImageContent` / `DocumentContent`)."""
        return {"type": self.kind, "data": base64.b64encode(self.data).decode(), "mime_type": self.mime_type}


def sniff(data: bytes) -> str | None:
    """The file's type from its first bytes, or None if it is none we can send."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return HEIF_BRANDS[data[8:12]]
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def read(paths: list[Path]) -> list[Attachment]:
    """Read and check every file; the first problem is one InvalidInput naming the file."""
    if len(paths) > MAX_FILES:
        raise InvalidInput(f"at most {MAX_FILES} files can go with one question; {len(paths)} were given")
    found = [_read_one(path) for path in paths]
    total = sum(a.size for a in found)
    if total > MAX_TOTAL_BYTES:
        raise InvalidInput(
            f"the files total {total / 1e6:.1f} MB; one request holds at most {MAX_TOTAL_BYTES / 1e6:.1f} MB of "
            "files (20 MB once encoded)"
        )
    return found


def _read_one(path: Path) -> Attachment:
    try:
        if path.stat().st_size > MAX_TOTAL_BYTES:
            raise InvalidInput(f"file {path} is {path.stat().st_size / 1e6:.1f} MB; the limit is "
                               f"{MAX_TOTAL_BYTES / 1e6:.1f} MB")  # fmt: skip
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"file {path} is a folder; give a file") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read file {path} ({exc.strerror or exc})") from None
    mime_type = sniff(data)
    if mime_type is None:
        raise InvalidInput(f"file {path} is not a PNG, JPEG, WEBP, HEIC/HEIF image or a PDF document (checked by "
                           "its content, not its name)")  # fmt: skip
    return Attachment(path.name, mime_type, data)


def input_of(question: str, files: list[Attachment]) -> str | list[dict[str, Any]]:
    """The create's `input`: the question alone, or the question (naming the files) followed by them."""
    if not files:
        return question
    names = ", ".join(f"{a.name} ({a.mime_type})" for a in files)
    return [{"type": "text", "text": f"{question}\n\nAttached files, in order: {names}"}, *(a.block() for a in files)]
