"""Read a batch file (plain text, CSV or JSON Lines) into validated items, or fail naming every bad line.

The whole file is checked before anything is stored, so a bad line 17 leaves the database untouched.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from research_runner import attachments
from research_runner.exceptions import InvalidInput
from research_runner.validation import agent_problem, key_problem, question_problem

MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 5 * 1024 * 1024
CSV_COLUMNS = frozenset({"question", "agent", "tags", "idempotency_key", "plan", "files"})
# How a CSV cell says yes or no to `plan` (JSON Lines take true or false).
FLAGS = {"true": True, "false": False}
# Enough to see a pattern (a wrong encoding, a shifted column) without a wall of text.
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class Item:
    question: str
    agent: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    idempotency_key: str | None = None
    plan: bool = False  # review the agent's research plan first (the job waits in plan_ready)
    files: tuple[str, ...] = ()  # images or PDFs sent with the question, resolved against the batch file's folder

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class LineError(InvalidInput):
    """What is wrong with one line of a batch file."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}, line {line}: {message}")
        self.source, self.line, self.reason = source, line, message


# A line's number and what it holds, or why it could not be read.
Record = tuple[int, dict[str, Any] | LineError]


def read(path: Path) -> list[Item]:
    """Every item of the file, validated; the format follows the extension (.csv, .jsonl/.ndjson, else text)."""
    try:
        if path.stat().st_size > MAX_BATCH_BYTES:
            raise InvalidInput(f"{path} is larger than {MAX_BATCH_BYTES // (1024 * 1024)} MiB")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"batch file {path} does not exist") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read batch file {path}: {exc}") from None
    return parse(decode(data, path.name), path.name, path.suffix.lower(), path.parent)


def decode(data: bytes, source: str) -> str:
    """UTF-8, with or without the byte-order mark spreadsheet programs write; anything else names its lines."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InvalidInput(f"{source} is UTF-16 text; save the file as UTF-8")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    errors = []
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            column = len(line[: exc.start].decode("utf-8")) + 1
            reason = f"not valid UTF-8 (byte 0x{line[exc.start]:02x} at column {column}); save the file as UTF-8"
            errors.append(LineError(source, number, reason))
    raise combined(source, errors)


def combined(source: str, errors: list[LineError]) -> InvalidInput:
    """One error for all the bad lines: a single one reads as before, several as a summary and a list."""
    if len(errors) == 1:
        return errors[0]
    shown = [f"  line {error.line}: {error.reason}" for error in errors[:MAX_REPORTED_ERRORS]]
    if len(errors) > MAX_REPORTED_ERRORS:
        shown.append(f"  and {len(errors) - MAX_REPORTED_ERRORS} more")
    return InvalidInput("\n".join([f"{source} has {len(errors)} bad lines:", *shown]))


def parse(text: str, source: str, suffix: str, folder: Path | None = None) -> list[Item]:
    """The items of a batch file's text; `files` paths are relative to `folder` (default: the working folder)."""
    reader = {".csv": _csv, ".jsonl": _jsonl, ".ndjson": _jsonl}.get(suffix, _plain)
    numbered: list[tuple[int, Item]] = []
    errors: list[LineError] = []
    for number, record in reader(text.removeprefix("\ufeff"), source):
        try:
            if isinstance(record, LineError):
                raise record
            numbered.append((number, _item(source, number, record, folder or Path())))
        except LineError as exc:
            errors.append(exc)
    errors += _repeated_keys(numbered, source)
    if errors:
        raise combined(source, sorted(errors, key=lambda error: error.line))
    if not numbered:
        raise InvalidInput(f"{source} has no questions")
    if len(numbered) > MAX_BATCH_ITEMS:
        raise InvalidInput(f"{source} has {len(numbered)} questions; a batch holds at most {MAX_BATCH_ITEMS}")
    return [item for _, item in numbered]


def _plain(text: str, source: str) -> Iterator[Record]:
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, {"question": stripped}


def _jsonl(text: str, source: str) -> Iterator[Record]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, LineError(source, number, f"invalid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            yield number, LineError(source, number, 'expected an object such as {"question": "..."}')
            continue
        yield number, record


def _csv(text: str, source: str) -> Iterator[Record]:
    rows = csv.reader(io.StringIO(text))
    header = _header(next(rows, []), source)
    previous = rows.line_num
    try:
        for row in rows:
            # A quoted cell may span lines: a record is named by the line it starts on.
            number, previous = previous + 1, rows.line_num
            if any(cell.strip() for cell in row):
                yield number, _row(source, number, header, row)
    except csv.Error as exc:
        yield rows.line_num, LineError(source, rows.line_num, f"not readable as CSV ({exc})")


def _header(names: list[str], source: str) -> list[str]:
    # Spreadsheets keep whatever case and spacing people typed, and may add empty trailing columns.
    header = [name.strip().lower() for name in names]
    named = [name for name in header if name]
    if "question" not in named:
        raise LineError(source, 1, "the header needs a 'question' column")
    if set(named) - CSV_COLUMNS:
        raise LineError(source, 1, f"unknown column(s): {', '.join(sorted(set(named) - CSV_COLUMNS))}")
    if len(named) != len(set(named)):
        raise LineError(source, 1, "a column is named twice")
    return header


def _row(source: str, number: int, header: list[str], row: list[str]) -> dict[str, Any] | LineError:
    if len(row) > len(header) and any(cell.strip() for cell in row[len(header) :]):
        return LineError(source, number, f"{len(row)} cells but the header has {len(header)} columns")
    cells = {name: cell.strip() for name, cell in zip(header, row, strict=False) if cell.strip()}
    if "" in cells:
        return LineError(source, number, "a value in a column without a name in the header")
    record: dict[str, Any] = dict(cells)
    for name in ("tags", "files"):  # lists in one cell, separated by ";"
        if name in cells:
            record[name] = [part.strip() for part in cells[name].split(";") if part.strip()]
    if "plan" in cells:
        record["plan"] = FLAGS.get(cells["plan"].lower(), cells["plan"])
    return record


def _item(source: str, number: int, record: dict[str, Any], folder: Path) -> Item:
    unknown = set(record) - CSV_COLUMNS
    if unknown:
        raise LineError(source, number, f"unknown field(s): {', '.join(sorted(unknown))}")
    for name, value in record.items():
        if _holds_nul(value):
            raise LineError(
                source, number, f"the {name} field holds a NUL character (\\0), which PostgreSQL cannot store"
            )
    question = record.get("question")
    problem = question_problem(question) if isinstance(question, str) else "the question is empty"
    if problem or not isinstance(question, str):
        raise LineError(source, number, problem or "the question is empty")
    return Item(
        question.strip(),
        _agent(source, number, record.get("agent")),
        _tags(source, number, record),
        _key(source, number, record.get("idempotency_key")),
        _plan(source, number, record.get("plan", False)),
        _files(source, number, record.get("files", []), folder),
    )


def _plan(source: str, number: int, plan: Any) -> bool:
    if not isinstance(plan, bool):
        raise LineError(source, number, f"plan must be true or false, not {plan!r}")
    return plan


def _files(source: str, number: int, files: Any, folder: Path) -> tuple[str, ...]:
    """Each file checked now (exists, readable, a supported type, within the limits), so nothing is stored
    for a batch with a bad one; kept as paths, read again when the batch is stored."""
    if not isinstance(files, list) or not all(isinstance(f, str) and f.strip() for f in files):
        raise LineError(source, number, "files must be a list of paths")
    paths = [folder / f.strip() for f in files]
    try:
        attachments.read(paths)
    except InvalidInput as exc:
        raise LineError(source, number, str(exc)) from None
    return tuple(str(path) for path in paths)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, list):
        return any(_holds_nul(part) for part in value)
    return isinstance(value, str) and "\x00" in value


def _agent(source: str, number: int, agent: Any) -> str | None:
    if agent is None:
        return None
    problem = agent_problem(str(agent))
    if problem:
        raise LineError(source, number, problem)
    return str(agent)


def _tags(source: str, number: int, record: dict[str, Any]) -> tuple[str, ...]:
    tags = record.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise LineError(source, number, "tags must be a list of strings")
    return tuple(tags)


def _key(source: str, number: int, key: Any) -> str | None:
    if key is None:
        return None
    problem = key_problem(key) if isinstance(key, str) else key_problem("")
    if problem or not isinstance(key, str):
        raise LineError(source, number, problem or "the idempotency key must be text")
    return key


def _repeated_keys(numbered: list[tuple[int, Item]], source: str) -> list[LineError]:
    seen: dict[str, int] = {}
    errors = []
    for number, item in numbered:
        if item.idempotency_key is None:
            continue
        if item.idempotency_key in seen:
            errors.append(LineError(source, number, f"idempotency key repeats line {seen[item.idempotency_key]}"))
        else:
            seen[item.idempotency_key] = number
    return errors
