"""What `research list` and `research status` read, over the plain DB-API (sqlite3 or psycopg).

Importing SQLModel and SQLAlchemy costs a command about 0.4 s, several times the rest of its work, and these two
commands only read. They come here first; `open_reader` returns None for anything but a database that exists at
the schema this version needs (a new database, an old schema, one that cannot be reached), and the command then
takes the Client's path, which creates the schema or explains the problem in the usual words.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from research_runner.constants import MIN_ID_PREFIX, SCHEMA_HEAD, SQLITE_BUSY_TIMEOUT_MS, VERSION_TABLE
from research_runner.exceptions import InvalidInput, JobNotFound

if TYPE_CHECKING:
    from research_runner.settings import Settings

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIX = "postgresql+psycopg://"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as stored, field for field like models.Job (a unit test keeps the two the same), without the ORM."""

    id: str
    question: str
    agent: str
    status: str
    remote_status: str | None
    interaction_id: str | None
    retry_of: str | None
    idempotency_key: str | None
    batch_id: str | None
    tags: str | None
    created_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    poll_count: int
    next_poll_at: datetime | None
    lease_until: datetime | None
    error: str | None
    last_thought: str | None
    input_tokens: int | None
    output_tokens: int | None
    thought_tokens: int | None
    total_tokens: int | None
    report_title: str | None
    report_path: str | None
    report_markdown: str | None
    report_error: str | None
    api_endpoint: str | None
    batch_position: int | None
    agent_config: str | None
    next_input: str | None
    previous_interaction_id: str | None
    parent_id: str | None
    plan_markdown: str | None
    usage_json: str | None
    cost_usd: float | None
    figures: str | None
    files: str | None
    remote_deleted_at: datetime | None
    local_deleted_at: datetime | None

    @property
    def short_id(self) -> str:
        return self.id[:8]


@dataclass(frozen=True, slots=True)
class TurnRow:
    """One interaction of a job's thread, as `research status` lists them."""

    kind: str
    interaction_id: str | None
    created_at: datetime


def _columns(row_type: type[Any]) -> tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(row_type))


def _datetime_columns(row_type: type[Any]) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(row_type) if str(f.type).startswith("datetime"))


JOB_COLUMNS, TURN_COLUMNS = _columns(JobRow), _columns(TurnRow)
DATETIME_COLUMNS = _datetime_columns(JobRow) | _datetime_columns(TurnRow)


def job_prefix(ref: str) -> str:
    """A job reference as typed, checked and made comparable with stored ids."""
    ref = ref.strip().lower()
    if len(ref) < MIN_ID_PREFIX:
        raise InvalidInput(f"job id {ref!r} is too short; give at least {MIN_ID_PREFIX} characters")
    return ref


def only_match(ref: str, matches: Sequence[T]) -> T:
    """The one job a prefix names (at most two candidates are looked up), or why there is not exactly one."""
    if not matches:
        raise JobNotFound(f"no job with id {ref!r}; `research list` shows the jobs")
    if len(matches) > 1:
        raise InvalidInput(f"job id {ref!r} is ambiguous; give more characters")
    return matches[0]


class DbApiConnection(Protocol):
    def execute(self, query: str, params: Sequence[Any] = ..., /) -> Any: ...

    def close(self) -> None: ...


class Reader:
    """Read-only job queries on one open connection; `?` placeholders, whichever the driver."""

    def __init__(self, connection: DbApiConnection, placeholder: str) -> None:
        self._connection = connection
        self._placeholder = placeholder

    def _rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self._connection.execute(query.replace("?", self._placeholder), params).fetchall())

    def schema(self) -> str | None:
        return next((str(row[0]) for row in self._rows(f"SELECT version_num FROM {VERSION_TABLE}", ())), None)

    def find(self, ref: str) -> JobRow:
        """A job by its id or a unique prefix of it (what store.find answers, in the same words)."""
        prefix = job_prefix(ref)
        query = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE substr(id, 1, ?) = ? LIMIT 2"
        return only_match(prefix, [_row(JobRow, JOB_COLUMNS, row) for row in self._rows(query, (len(prefix), prefix))])

    def list_jobs(self, status: str | None, limit: int) -> list[JobRow]:
        """Jobs newest first, as store.list_jobs without a batch."""
        where, params = ("WHERE status = ? ", (status,)) if status else ("", ())
        query = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs {where}ORDER BY created_at DESC LIMIT ?"
        return [_row(JobRow, JOB_COLUMNS, row) for row in self._rows(query, (*params, limit))]

    def turns(self, job_id: str) -> list[TurnRow]:
        query = f"SELECT {', '.join(TURN_COLUMNS)} FROM job_turns WHERE job_id = ? ORDER BY id"
        return [_row(TurnRow, TURN_COLUMNS, row) for row in self._rows(query, (job_id,))]


def _row(row_type: type[T], columns: tuple[str, ...], values: Sequence[Any]) -> T:
    return row_type(**{name: _value(name, value) for name, value in zip(columns, values, strict=True)})


def _value(column: str, value: Any) -> Any:
    if column not in DATETIME_COLUMNS or value is None:
        return value
    if isinstance(value, str):  # SQLite keeps SQLAlchemy's naive UTC text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@contextmanager
def open_reader(settings: Settings) -> Iterator[Reader | None]:
    """A Reader when the database exists at this version's schema, else None (the caller takes the slow path)."""
    connection = _connect(settings.database_url)
    if connection is None:
        yield None
        return
    with closing(connection):
        reader = Reader(connection, "?" if settings.database_url.startswith(SQLITE_PREFIX) else "%s")
        yield reader if _schema_or_none(reader) == SCHEMA_HEAD else None


def _schema_or_none(reader: Reader) -> str | None:
    try:
        return reader.schema()
    except Exception:  # no version table yet, or a driver error: the full path will say what is wrong
        return None


def _connect(url: str) -> DbApiConnection | None:
    try:
        if url.startswith(SQLITE_PREFIX):
            return _sqlite(Path(url.removeprefix(SQLITE_PREFIX)))
        if url.startswith(POSTGRES_PREFIX):
            return _postgres("postgresql://" + url.removeprefix(POSTGRES_PREFIX))
    except Exception:  # unreachable, refused, malformed: the full path reports it with the URL redacted
        return None
    return None


def _sqlite(path: Path) -> DbApiConnection | None:
    import sqlite3

    if not path.is_file():  # a first command creates the database, on the full path
        return None
    return sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)


def _postgres(url: str) -> DbApiConnection:
    import psycopg

    return psycopg.connect(url, connect_timeout=5, autocommit=True)
