"""The per-interaction directive `[[emulator outcome=O duration=S charts=N chart=K]]` (a test contract).

Keys are optional and may come in any order. `charts=N` (0-10) sets how many charts a completed report
carries when `agent_config.visualization` is "auto"; `chart=broken-base64|broken-mime` makes the first
chart bad data (undecodable base64, or a mime type no client knows) so clients' handling can be tested.
Anything that starts like a directive (`[[emulator`, any case) but is not well formed is rejected, so a
typo never silently becomes a normal interaction.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .settings import OUTCOMES

KEYS = ("outcome", "duration", "charts", "chart")
BROKEN_CHARTS = ("broken-base64", "broken-mime")
MAX_CHARTS = 10
_START = re.compile(r"\[\[\s*emulator\b", re.IGNORECASE)
_FULL = re.compile(r"\[\[\s*emulator\b(?P<body>[^\[\]]*)\]\]", re.IGNORECASE)


class DirectiveError(ValueError):
    """A malformed directive; the message is returned to the client in a 400 body."""


@dataclass(frozen=True, slots=True)
class Directive:
    outcome: str | None = None
    duration: float | None = None
    charts: int | None = None
    chart: str | None = None


def parse_directive(text: str) -> tuple[Directive | None, str]:
    """Return the directive found in `text` (or None) and the text with the directive removed."""
    starts = list(_START.finditer(text))
    if not starts:
        return None, text
    if len(starts) > 1:
        raise DirectiveError("only one [[emulator ...]] directive is allowed per interaction")
    match = _FULL.match(text, starts[0].start())
    if match is None:
        raise DirectiveError("malformed [[emulator ...]] directive: expected [[emulator key=value ...]]")
    directive = _parse_body(match.group("body"))
    # Join the surrounding text with a single space so the cleaned question reads naturally.
    cleaned = (text[: match.start()].rstrip() + " " + text[match.end() :].lstrip()).strip()
    return directive, cleaned


def _parse_body(body: str) -> Directive:
    values: dict[str, str] = {}
    for token in body.split():
        key, eq, value = token.partition("=")
        if not eq or not key or not value:
            raise DirectiveError(f"malformed directive token {token!r}: expected key=value")
        if key not in KEYS:
            raise DirectiveError(f"unknown directive key {key!r}: use {', '.join(KEYS)}")
        if key in values:
            raise DirectiveError(f"directive key {key!r} given twice")
        values[key] = value
    outcome = values.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise DirectiveError(f"unknown outcome {outcome!r}: use one of {', '.join(OUTCOMES)}")
    chart = values.get("chart")
    if chart is not None and chart not in BROKEN_CHARTS:
        raise DirectiveError(f"unknown chart {chart!r}: use one of {', '.join(BROKEN_CHARTS)}")
    return Directive(outcome=outcome, duration=_duration(values), charts=_charts(values), chart=chart)


def _charts(values: dict[str, str]) -> int | None:
    if "charts" not in values:
        return None
    text = values["charts"]
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_CHARTS:
        raise DirectiveError(f"charts must be a whole number from 0 to {MAX_CHARTS}, got {text!r}")
    return int(text)


def _duration(values: dict[str, str]) -> float | None:
    duration: float | None = None
    if "duration" in values:
        try:
            duration = float(values["duration"])
        except ValueError:
            raise DirectiveError(f"duration {values['duration']!r} is not a number of seconds") from None
        if not math.isfinite(duration) or duration < 0:
            raise DirectiveError(f"duration must be a finite number >= 0, got {values['duration']!r}")
    return duration
