"""Read a batch file (plain text, CSV or JSON Lines) into validated items, or fail with a line number.

The whole file is checked before anything is stored, so a bad line 17 leaves the database untouched.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from research_runner.constants import IDEMPOTENCY_KEY_MAX_CHARS, MAX_QUESTION_CHARS
from research_runner.exceptions import InvalidInput
from research_runner.validation import clean_agent as check_agent

MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 5 * 1024 * 1024
CSV_COLUMNS = frozenset({"question", "agent", "tags", "idempotency_key"})


@dataclass(frozen=True)
class Item:
    question: str
    agent: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    idempotency_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class LineError(InvalidInput):
    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}, line {line}: {message}")


def read(path: Path) -> list[Item]:
    """Every item of the file, validated; the format follows the extension (.csv, .jsonl/.ndjson, else text)."""
    try:
        if path.stat().st_size > MAX_BATCH_BYTES:
            raise InvalidInput(f"{path} is larger than {MAX_BATCH_BYTES // (1024 * 1024)} MiB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"batch file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read batch file {path}: {exc}") from None
    return parse(text, path.name, path.suffix.lower())


def parse(text: str, source: str, suffix: str) -> list[Item]:
    reader = {".csv": _csv, ".jsonl": _jsonl, ".ndjson": _jsonl}.get(suffix, _plain)
    numbered = reader(text, source)
    if not numbered:
        raise InvalidInput(f"{source} has no questions")
    if len(numbered) > MAX_BATCH_ITEMS:
        raise InvalidInput(f"{source} has {len(numbered)} questions; a batch holds at most {MAX_BATCH_ITEMS}")
    _no_repeated_keys(numbered, source)
    return [item for _, item in numbered]


def _plain(text: str, source: str) -> list[tuple[int, Item]]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            items.append((number, _item(source, number, {"question": stripped})))
    return items


def _jsonl(text: str, source: str) -> list[tuple[int, Item]]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LineError(source, number, f"invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise LineError(source, number, 'expected an object such as {"question": "..."}')
        items.append((number, _item(source, number, record)))
    return items


def _csv(text: str, source: str) -> list[tuple[int, Item]]:
    reader = csv.DictReader(io.StringIO(text))
    header = set(reader.fieldnames or [])
    if "question" not in header:
        raise LineError(source, 1, "the header needs a 'question' column")
    if header - CSV_COLUMNS:
        raise LineError(source, 1, f"unknown column(s): {', '.join(sorted(header - CSV_COLUMNS))}")
    items = []
    for row in reader:
        record = {k: v for k, v in row.items() if v not in (None, "")}
        if record:
            tags = record.get("tags")
            if isinstance(tags, str):
                record["tags"] = [t.strip() for t in tags.split(";") if t.strip()]
            items.append((reader.line_num, _item(source, reader.line_num, record)))
    return items


def _item(source: str, number: int, record: dict[str, Any]) -> Item:
    unknown = set(record) - CSV_COLUMNS
    if unknown:
        raise LineError(source, number, f"unknown field(s): {', '.join(sorted(unknown))}")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise LineError(source, number, "the question is empty")
    if len(question.strip()) > MAX_QUESTION_CHARS:
        raise LineError(source, number, f"the question is longer than {MAX_QUESTION_CHARS} characters")
    return Item(
        question.strip(),
        _agent(source, number, record.get("agent")),
        _tags(source, number, record),
        _key(source, number, record.get("idempotency_key")),
    )


def _agent(source: str, number: int, agent: Any) -> str | None:
    if agent is None:
        return None
    try:
        return check_agent(str(agent))
    except InvalidInput as exc:
        raise LineError(source, number, str(exc)) from None


def _tags(source: str, number: int, record: dict[str, Any]) -> tuple[str, ...]:
    tags = record.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise LineError(source, number, "tags must be a list of strings")
    return tuple(tags)


def _key(source: str, number: int, key: Any) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip() or len(key) > IDEMPOTENCY_KEY_MAX_CHARS:
        raise LineError(source, number, f"the idempotency key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} characters")
    return key


def _no_repeated_keys(numbered: list[tuple[int, Item]], source: str) -> None:
    seen: dict[str, int] = {}
    for number, item in numbered:
        if item.idempotency_key is None:
            continue
        if item.idempotency_key in seen:
            raise LineError(source, number, f"idempotency key repeats line {seen[item.idempotency_key]}")
        seen[item.idempotency_key] = number
