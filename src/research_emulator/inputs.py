"""The `input` of a create: text plus `image` and `document` content blocks, validated the way the API would.

Block shapes follow google-genai 3.6.1 (`interactions/content.py`, `imagecontent.py`, `documentcontent.py`):
`{"type": "image"|"document", "data": <base64>, "mime_type": ..., "uri": ...}`; there is no file-name field,
so a block is named by the last segment of its `uri`, or by a PDF's `/Title`, and otherwise described.

Limits: the Interactions docs give none, so the emulator uses Gemini's documented ones: image types
png/jpeg/webp/heic/heif (image-understanding docs), `application/pdf` for documents (document-understanding
docs; the SDK lists more document types, which deep research is not documented to read), and 20 MB for a
whole request with inline data ("the total request size limit is 20 MB"). Anything else is a 400.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass, field
from typing import Any

MAX_REQUEST_BYTES = 20 * 1024 * 1024
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")
DOCUMENT_TYPES = ("application/pdf",)
_MEDIA = {"image": IMAGE_TYPES, "document": DOCUMENT_TYPES}


class InputError(ValueError):
    """A bad `input`; the message goes back in a 400 body."""


@dataclass(frozen=True, slots=True)
class Attachment:
    kind: str  # "image" or "document"
    mime_type: str
    size: int | None  # decoded bytes of inline data; None for a `uri`
    name: str | None
    detail: str | None  # "64x48 px", "3 pages"

    def describe(self) -> str:
        what = "Image" if self.kind == "image" else "Document"
        label = f'{what} "{self.name}"' if self.name else f"An attached {what.lower()}"
        facts = [self.mime_type, *([self.detail] if self.detail else [])]
        facts.append(f"{self.size:,} bytes" if self.size is not None else "by reference")
        return f"{label} ({', '.join(facts)})"


@dataclass(slots=True)
class ParsedInput:
    text: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    # The input as content blocks (text, image, document), echoed in the `user_input` step.
    blocks: list[dict[str, Any]] = field(default_factory=list)


def parse_input(value: Any) -> ParsedInput:
    """Text and attachments of an `input`: a string, content blocks, steps ({type: user_input, content}) or turns."""
    parsed = ParsedInput()
    _walk(value, parsed)
    parsed.text = "\n".join(b["text"] for b in parsed.blocks if b["type"] == "text" and b["text"])
    if not parsed.text.strip() and not parsed.attachments:
        raise InputError("`input` is required and must contain text, an image or a document")
    return parsed


def _walk(value: Any, parsed: ParsedInput) -> None:
    if isinstance(value, str):
        parsed.blocks.append({"type": "text", "text": value})
    elif isinstance(value, list):
        for item in value:
            _walk(item, parsed)
    elif isinstance(value, dict):
        kind = value.get("type")
        if kind in ("text", None) and isinstance(value.get("text"), str):
            parsed.blocks.append({"type": "text", "text": str(value["text"])})
        elif kind in _MEDIA:
            parsed.attachments.append(_attachment(str(kind), value))
            parsed.blocks.append({k: value[k] for k in ("type", "data", "mime_type", "uri") if k in value})
        elif "content" in value:  # a step or a turn
            _walk(value["content"], parsed)
        elif kind in ("audio", "video"):
            # Google's Deep Research docs name text, images and documents as inputs, nothing else.
            raise InputError(f"`{kind}` input is not supported here; use text, image or document blocks")
        else:
            raise InputError(f"unsupported input block type {kind!r}")


def _attachment(kind: str, block: dict[str, Any]) -> Attachment:
    mime = block.get("mime_type")
    if mime not in _MEDIA[kind]:
        raise InputError(f"unsupported {kind} mime_type {mime!r}; supported: {', '.join(_MEDIA[kind])}")
    data, uri = block.get("data"), block.get("uri")
    if not data and not uri:
        raise InputError(f"an {kind} block needs `data` (base64) or `uri`")
    name = _uri_name(uri) if isinstance(uri, str) else None
    if not data:
        return Attachment(kind, str(mime), None, name, None)
    try:
        raw = base64.b64decode(str(data), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{kind} `data` is not valid base64") from None
    if kind == "image":
        return Attachment(kind, str(mime), len(raw), name, _png_size(raw))
    if not raw.startswith(b"%PDF-"):
        raise InputError("document `data` is not a PDF (it does not start with %PDF-)")
    return Attachment(kind, str(mime), len(raw), name or _pdf_title(raw), _pdf_pages(raw))


def _uri_name(uri: str) -> str | None:
    last = uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return last or None


def _png_size(raw: bytes) -> str | None:
    if raw.startswith(b"\x89PNG\r\n\x1a\n") and raw[12:16] == b"IHDR":
        width, height = struct.unpack(">II", raw[16:24])
        return f"{width}x{height} px"
    return None


def _pdf_title(raw: bytes) -> str | None:
    match = re.search(rb"/Title\s*\(([^)]{1,200})\)", raw)
    return match.group(1).decode("latin-1") if match else None


def _pdf_pages(raw: bytes) -> str | None:
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", raw))
    return f"{pages} page{'s' if pages != 1 else ''}" if pages else None
