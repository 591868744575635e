"""Small but real PNG bar charts for reports, written with the standard library (zlib + struct).

Charts travel as `image` content blocks inside the model output (SDK `ImageContent`: `type: "image"`,
base64 `data`, `mime_type`; streamed as `ImageDelta` with the same fields), as Google's Deep Research docs
describe for `visualization: "auto"`. `broken` variants give clients bad data to cope with.
"""

from __future__ import annotations

import base64
import random
import struct
import zlib
from typing import Any

WIDTH, HEIGHT = 120, 80
_BACKGROUND = (255, 255, 255)
_AXIS = (60, 60, 60)
_PALETTE = ((66, 133, 244), (219, 68, 55), (244, 180, 0), (15, 157, 88), (171, 71, 188))
# Not in the SDK's ImageContentMimeType list, so a client must treat it as unknown.
UNKNOWN_MIME = "image/x-emulated-unknown"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(pixels: list[list[tuple[int, int, int]]]) -> bytes:
    """Encode rows of RGB pixels as an 8-bit truecolour PNG (filter 0 on every row)."""
    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(channel for pixel in row for channel in pixel) for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def bar_chart(values: list[float]) -> bytes:
    """A bar per value (0..1 of the plot height) on a white background with axes."""
    pixels = [[_BACKGROUND] * WIDTH for _ in range(HEIGHT)]
    plot_top, plot_bottom, left = 6, HEIGHT - 8, 8
    slot = (WIDTH - left - 4) // max(1, len(values))
    for i, value in enumerate(values):
        top = plot_bottom - round(max(0.05, min(1.0, value)) * (plot_bottom - plot_top))
        x0 = left + i * slot + 2
        for y in range(top, plot_bottom):
            for x in range(x0, x0 + slot - 4):
                pixels[y][x] = _PALETTE[i % len(_PALETTE)]
    for x in range(left - 2, WIDTH - 2):
        pixels[plot_bottom][x] = _AXIS
    for y in range(plot_top - 2, plot_bottom + 1):
        pixels[y][left - 2] = _AXIS
    return png(pixels)


def chart_block(rng: random.Random, broken: str | None = None) -> dict[str, Any]:
    """An `image` content block holding a chart; `broken` is None, "broken-base64" or "broken-mime"."""
    data = base64.b64encode(bar_chart([rng.uniform(0.2, 1.0) for _ in range(rng.randint(3, 5))])).decode()
    if broken == "broken-base64":
        # '!' and '*' are outside the base64 alphabet and the length is not a multiple of 4.
        return {"type": "image", "data": "!!not*base64" + data[:21], "mime_type": "image/png"}
    if broken == "broken-mime":
        return {"type": "image", "data": data, "mime_type": UNKNOWN_MIME}
    return {"type": "image", "data": data, "mime_type": "image/png"}
