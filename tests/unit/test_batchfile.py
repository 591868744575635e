"""Batch files as people make them: spreadsheet CSV, byte-order marks, other encodings, several bad lines at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research_runner import batchfile
from research_runner.batchfile import Item
from research_runner.constants import DEFAULT_AGENT
from research_runner.exceptions import InvalidInput

BOM = b"\xef\xbb\xbf"
MAX = "deep-research-max-preview-04-2026"

GOOD = [
    ("bom.csv", BOM + b"question,agent\r\nWhy?,\r\n", [Item("Why?")]),
    ("bom.txt", BOM + b"Why?\nHow?\n", [Item("Why?"), Item("How?")]),
    ("bom.jsonl", BOM + b'{"question": "Why?"}\n', [Item("Why?")]),
    ("bom.ndjson", BOM + b'{"question": "Why?"}\r\n', [Item("Why?")]),
    (
        "cased.csv",
        b" Question , AGENT,Tags ,Idempotency_Key\nWhy?, " + MAX.encode() + b" ,a; b,k1\n",
        [Item("Why?", MAX, ("a", "b"), "k1")],
    ),
    ("trailing-columns.csv", b"question,agent,,\nWhy?,,,\n,,,\nHow?,,,\n", [Item("Why?"), Item("How?")]),
    ("multiline.csv", b'question\n"Why\nis the sky blue?"\nHow?\n', [Item("Why\nis the sky blue?"), Item("How?")]),
    ("accents.txt", "Café prices in Zürich?\n".encode(), [Item("Café prices in Zürich?")]),
    ("agent.jsonl", json.dumps({"question": "Why?", "agent": DEFAULT_AGENT}).encode(), [Item("Why?", DEFAULT_AGENT)]),
]


@pytest.mark.parametrize(("name", "data", "items"), GOOD, ids=[case[0] for case in GOOD])
def test_files_as_spreadsheets_and_editors_save_them(tmp_path: Path, name: str, data: bytes, items: list[Item]) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    assert batchfile.read(path) == items


def joined(lines: list[str]) -> str:
    return "\n".join(lines)


BAD = [
    (
        "latin1.txt",
        b"Why?\nHow?\n" + b"x" * 11 + b"\xe9t\xe9?\n",
        "latin1.txt, line 3: not valid UTF-8 (byte 0xe9 at column 12); save the file as UTF-8",
    ),
    (
        "latin1.csv",
        b"question\ncaf\xe9?\n" + "Zürich?".encode() + b"\n\xfcber\xe9?\n",
        joined(
            [
                "latin1.csv has 2 bad lines:",
                "  line 2: not valid UTF-8 (byte 0xe9 at column 4); save the file as UTF-8",
                "  line 4: not valid UTF-8 (byte 0xfc at column 1); save the file as UTF-8",
            ]
        ),
    ),
    (
        "after-multibyte.txt",
        "Zürich ".encode() + b"\xe9\n",
        "after-multibyte.txt, line 1: not valid UTF-8 (byte 0xe9 at column 8); save the file as UTF-8",
    ),
    ("utf16.txt", "Why?\n".encode("utf-16"), "utf16.txt is UTF-16 text; save the file as UTF-8"),
    (
        "mixed.jsonl",
        joined(
            [
                '{"question": "fine"}',
                '{"question": "broken"',
                '["not", "an", "object"]',
                json.dumps({"question": "q", "agent": "deep-thought"}),
                json.dumps({"question": "fine", "idempotency_key": "k"}),
                json.dumps({"question": "again", "idempotency_key": "k"}),
                json.dumps({"question": "", "colour": "blue"}),
            ]
        ).encode(),
        joined(
            [
                "mixed.jsonl has 5 bad lines:",
                "  line 2: invalid JSON (Expecting ',' delimiter)",
                '  line 3: expected an object such as {"question": "..."}',
                "  line 4: unknown agent 'deep-thought'; choose one of: deep-research-preview-04-2026, "
                "deep-research-max-preview-04-2026, deep-research-pro-preview-12-2025",
                "  line 6: idempotency key repeats line 5",
                "  line 7: unknown field(s): colour",
            ]
        ),
    ),
    (
        "nul.txt",
        b"Why?\nWhy\x00 not?\n",
        "nul.txt, line 2: the question field holds a NUL character (\\0), which PostgreSQL cannot store",
    ),
    (
        "nul.jsonl",
        b'{"question": "Why?", "tags": ["a\\u0000"]}\n',
        "nul.jsonl, line 1: the tags field holds a NUL character (\\0), which PostgreSQL cannot store",
    ),
    (
        "nul.csv",
        b'question\nok\n"Why\x00"\n',
        "nul.csv, line 3: the question field holds a NUL character (\\0), which PostgreSQL cannot store",
    ),
    ("extra-cell.csv", b"question\nWhy?,surprise\n", "extra-cell.csv, line 2: 2 cells but the header has 1 columns"),
    (
        "unnamed.csv",
        b"question,,agent\nWhy?,oops,\n",
        "unnamed.csv, line 2: a value in a column without a name in the header",
    ),
    ("twice.csv", b"question,Question\nWhy?,How?\n", "twice.csv, line 1: a column is named twice"),
    ("no-question.csv", BOM + b"Questions\nWhy?\n", "no-question.csv, line 1: the header needs a 'question' column"),
    (
        "start-line.csv",
        b'question,agent\n"Why\nand how?",deep-thought\n',
        "start-line.csv, line 2: unknown agent 'deep-thought'; choose one of: deep-research-preview-04-2026, "
        "deep-research-max-preview-04-2026, deep-research-pro-preview-12-2025",
    ),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD, ids=[case[0] for case in BAD])
def test_bad_files_name_every_bad_line(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InvalidInput) as raised:
        batchfile.read(path)
    assert str(raised.value) == message


def test_many_bad_lines_show_the_first_twenty_and_count_the_rest() -> None:
    text = "\n".join(["question,agent", *[f"q{i},deep-thought" for i in range(25)], "fine,"])
    with pytest.raises(InvalidInput) as raised:
        batchfile.parse(text, "big.csv", ".csv")
    lines = str(raised.value).splitlines()
    assert lines[0] == "big.csv has 25 bad lines:"
    assert [line.split(":")[0] for line in lines[1:21]] == [f"  line {n}" for n in range(2, 22)]
    assert lines[21:] == ["  and 5 more"]


def test_one_bad_line_is_a_line_error_with_its_parts() -> None:
    with pytest.raises(batchfile.LineError) as raised:
        batchfile.parse("fine\n\nx\x00\n", "one.txt", ".txt")
    assert (raised.value.source, raised.value.line) == ("one.txt", 3)
    assert raised.value.reason.startswith("the question field holds a NUL character")


def test_a_byte_order_mark_in_text_given_directly_is_ignored() -> None:
    assert batchfile.parse("\ufeffQuestion\nWhy?\n", "direct.csv", ".csv") == [Item("Why?")]
