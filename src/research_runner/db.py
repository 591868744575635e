"""Engines, sessions and the schema version check; migrations are alembic's, run from here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from research_runner.constants import SCHEMA_HEAD, SQLITE_BUSY_TIMEOUT_MS, VERSION_TABLE
from research_runner.exceptions import InvalidInput, SchemaOutdated, ServiceUnavailable
from research_runner.settings import Settings, redact_url

if TYPE_CHECKING:
    from alembic.config import Config

POOL_SIZE, POOL_OVERFLOW = 24, 16  # connections per process and engine, kept / opened beyond them at most


def get_engine(url: str) -> Engine:
    """One engine per URL and process; callers in forked workers get their own via `dispose_engines`."""
    try:
        return _engine(url)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise InvalidInput(f"invalid RESEARCH_DATABASE_URL {redact_url(url)!r} ({exc})") from None


@cache
def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, poolclass=NullPool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A worker's step threads (8 per message, `worker_concurrency` messages at once with the threads pool) each
    # hold a connection for a moment: connections beyond pool_size are closed on return, and reopening one per
    # step cost the worker and PostgreSQL more than the step (issue 16). Connections open only when needed.
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW,
                         connect_args={"connect_timeout": 5})  # fmt: skip


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the CLI read while a worker writes; busy_timeout makes writers queue instead of failing.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def dispose_engines() -> None:
    _engine.cache_clear()


@contextmanager
def session(settings: Settings) -> Iterator[Session]:
    """A session that commits on success; connection failures become ServiceUnavailable."""
    try:
        with Session(get_engine(settings.database_url), expire_on_commit=False) as db:
            yield db
            db.commit()
    except OperationalError as exc:
        raise unavailable(settings, exc) from None


def execute_plain(session: Session, statement: Any, rows: list[dict[str, Any]] | None = None) -> Any:
    """Run a statement as plain SQL on the session's connection (in its transaction). The session's ORM path
    would also look for loaded objects to update in memory, which no caller keeps: ~a third of the CPU of a
    worker's UPDATE (issue 16)."""
    return session.connection().execute(statement, rows)


def unavailable(settings: Settings, exc: OperationalError) -> ServiceUnavailable:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    return ServiceUnavailable(
        f"cannot use the database at {redact_url(settings.database_url)} ({reason}); "
        "check RESEARCH_DATABASE_URL and that the server is running"
    )


def _alembic_config(engine: Engine) -> Config:
    # No sqlalchemy.url: env.py uses the connection handed in, and a URL with '%' in its password would
    # break alembic's config interpolation (and print the password).
    from alembic.config import Config  # alembic is imported only when the schema is looked at

    config = Config()
    config.set_main_option("script_location", str(resources.files("research_runner") / "migrations"))
    return config


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision as alembic records it (None for a database it never migrated), without alembic."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        versions = sorted(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    return ", ".join(versions) or None  # several rows only if branches were merged by hand: never the head


def upgrade(settings: Settings) -> tuple[str | None, str | None]:
    """Migrate to the newest schema; returns (before, after) revisions."""
    from alembic import command

    settings.ensure_dirs()
    engine = get_engine(settings.database_url)
    try:
        before = current_revision(engine)
        with engine.begin() as conn:
            config = _alembic_config(engine)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return before, current_revision(engine)
    except OperationalError as exc:
        raise unavailable(settings, exc) from None


def ensure_schema(settings: Settings) -> None:
    """A new, empty database is created on first use; an old schema is never migrated behind the user's back."""
    settings.ensure_dirs()
    engine = get_engine(settings.database_url)
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise unavailable(settings, exc) from None
    if current == SCHEMA_HEAD:
        return
    if current is None:
        upgrade(settings)
        return
    raise SchemaOutdated(
        f"the database schema is at revision {current} but this version needs {SCHEMA_HEAD}; run `research db upgrade`"
    )
