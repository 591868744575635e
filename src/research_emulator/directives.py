"""The per-interaction directive `[[emulator outcome=O duration=S]]` (a contract used by other tests).

Keys are optional and may come in any order. Anything that starts like a directive (`[[emulator`, any
case) but is not well formed is rejected, so a typo never silently becomes a normal interaction.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .settings import OUTCOMES

_START = re.compile(r"\[\[\s*emulator\b", re.IGNORECASE)
_FULL = re.compile(r"\[\[\s*emulator\b(?P<body>[^\[\]]*)\]\]", re.IGNORECASE)


class DirectiveError(ValueError):
    """A malformed directive; the message is returned to the client in a 400 body."""


@dataclass(frozen=True, slots=True)
class Directive:
    outcome: str | None = None
    duration: float | None = None


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
        if key not in ("outcome", "duration"):
            raise DirectiveError(f"unknown directive key {key!r}: use outcome and/or duration")
        if key in values:
            raise DirectiveError(f"directive key {key!r} given twice")
        values[key] = value
    outcome = values.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise DirectiveError(f"unknown outcome {outcome!r}: use one of {', '.join(OUTCOMES)}")
    duration: float | None = None
    if "duration" in values:
        try:
            duration = float(values["duration"])
        except ValueError:
            raise DirectiveError(f"duration {values['duration']!r} is not a number of seconds") from None
        if not math.isfinite(duration) or duration < 0:
            raise DirectiveError(f"duration must be a finite number >= 0, got {values['duration']!r}")
    return Directive(outcome=outcome, duration=duration)
