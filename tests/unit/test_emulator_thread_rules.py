"""Pure rules of emulator threads (plan / revise / confirm / follow-up) and input parsing."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from research_emulator.inputs import InputError, parse_input
from research_emulator.threads import Thread, decide, is_confirmation

PLANNED = Thread(question="Q", stage="planned", plan=("a", "b"))
REPORTED = Thread(question="Q", stage="reported", report_title="Q", sources=({"url": "u", "title": "t"},))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Plan looks good!", True),
        ("Yes, go ahead.", True),
        ("ok", True),
        ("Add costs", False),
        ("yes but add X", False),
    ],
)
def test_is_confirmation(text: str, expected: bool) -> None:
    assert is_confirmation(text) is expected


@pytest.mark.parametrize(
    ("previous", "text", "planning", "is_model", "mode", "changes"),
    [
        (None, "Q", False, False, "research", ()),
        (None, "Q", True, False, "plan", ()),
        (PLANNED, "Add costs", True, False, "plan", ("Add costs",)),
        (PLANNED, "Looks good", True, False, "plan", ()),
        (PLANNED, "Looks good", False, False, "execute", ()),
        (REPORTED, "More?", False, False, "follow_up", ()),
        (REPORTED, "More?", False, True, "answer", ()),
        (REPORTED, "New topic", True, False, "plan", ()),
    ],
)
def test_decide(
    previous: Thread | None, text: str, planning: bool, is_model: bool, mode: str, changes: tuple[str, ...]
) -> None:
    got_mode, thread = decide(previous, text, planning=planning, is_model=is_model)
    assert (got_mode, thread.changes) == (mode, changes)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_parse_input_names_and_describes() -> None:
    parsed = parse_input(
        [
            "Look",
            {
                "type": "document",
                "data": b64(b"%PDF-1.7 /Type /Page"),
                "mime_type": "application/pdf",
                "uri": "gs://b/x.pdf",
            },
            {"type": "image", "uri": "files/abc", "mime_type": "image/webp"},
        ]
    )
    assert parsed.text == "Look"
    assert [a.describe() for a in parsed.attachments] == [
        'Document "x.pdf" (application/pdf, 1 page, 20 bytes)',
        'Image "abc" (image/webp, by reference)',
    ]


@pytest.mark.parametrize(
    "value",
    [None, "", [], [{"type": "text", "text": "  "}], [{"type": "video", "uri": "v"}], [{"type": "weird"}]],
)
def test_parse_input_rejects(value: Any) -> None:
    with pytest.raises(InputError):
        parse_input(value)
