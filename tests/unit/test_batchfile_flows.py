"""Batch files that ask for a plan review or send files: `plan` and `files`, checked before anything is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research_runner import batchfile
from research_runner.batchfile import Item
from research_runner.exceptions import InvalidInput

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
PDF = b"%PDF-1.4\n%%EOF\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A batch file's folder holding a PNG and, in a subfolder, a PDF."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "chart.png").write_bytes(PNG)
    (tmp_path / "docs" / "contract.pdf").write_bytes(PDF)
    (tmp_path / "notes.png").write_text("plain text named like an image")
    return tmp_path


def read(folder: Path, name: str, text: str) -> list[Item]:
    (folder / name).write_text(text)
    return batchfile.read(folder / name)


GOOD = [
    ("plain.csv", "question,plan,files\nWhy?,true,chart.png; docs/contract.pdf\nHow?,false,\nWhat?,,\n"),
    ("cased.csv", "question,plan,files\nWhy?,TRUE,chart.png;docs/contract.pdf\nHow?,False,\nWhat?,,\n"),
    ("lines.jsonl", "\n".join(json.dumps(r) for r in [
        {"question": "Why?", "plan": True, "files": ["chart.png", "docs/contract.pdf"]},
        {"question": "How?", "plan": False, "files": []},
        {"question": "What?"},
    ])),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text"), GOOD, ids=[case[0] for case in GOOD])
def test_plan_and_files_relative_to_the_batch_file(folder: Path, name: str, text: str) -> None:
    files = (str(folder / "chart.png"), str(folder / "docs" / "contract.pdf"))
    assert read(folder, name, text) == [Item("Why?", plan=True, files=files), Item("How?"), Item("What?")]


def test_items_without_the_new_fields_are_as_before(folder: Path) -> None:
    assert read(folder, "old.csv", "question,tags\nWhy?,a;b\n") == [Item("Why?", tags=("a", "b"))]
    assert Item("Why?", plan=True, files=("x.png",)).to_json()["files"] == ["x.png"]


BAD = [
    ("question,plan\nWhy?,yes\n", "b.csv, line 2: plan must be true or false, not 'yes'"),
    ('{"question": "Why?", "plan": "true"}\n', "b.jsonl, line 1: plan must be true or false, not 'true'"),
    ('{"question": "Why?", "files": "chart.png"}\n', "b.jsonl, line 1: files must be a list of paths"),
    ("question,files\nWhy?,missing.pdf\n", "b.csv, line 2: file {folder}/missing.pdf does not exist"),
    ("question,files\nWhy?,docs\n", "b.csv, line 2: file {folder}/docs is a folder; give a file"),
    (
        "question,files\nWhy?,notes.png\n",
        "b.csv, line 2: file {folder}/notes.png is not a PNG, JPEG, WEBP, HEIC/HEIF image or a PDF document "
        "(checked by its content, not its name)",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[case[1][:30] for case in BAD])
def test_a_bad_plan_or_file_names_its_line(folder: Path, text: str, message: str) -> None:
    name = "b.jsonl" if text.startswith("{") else "b.csv"
    with pytest.raises(InvalidInput) as caught:
        read(folder, name, text)
    assert str(caught.value) == message.format(folder=folder)
