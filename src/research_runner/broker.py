"""Housekeeping of the embedded SQLite broker: its tables and queues made once, its delivered messages dropped.

kombu's SQLAlchemy transport creates its tables and queue rows on first use by looking, then inserting, under a
lock that only holds within one process: two processes sending to a fresh broker at once failed with "table
kombu_queue already exists" or "UNIQUE constraint failed: kombu_queue.name" (5 of 6 rounds of six processes).
Each process now declares the queues once, one process at a time, before its first message.

kombu's SQLAlchemy transport marks a message delivered (`visible = false`) instead of deleting it, so the broker
file grew with every task ever sent (celery-notes: "Broker is not a database"). An unacknowledged message that
a worker loses is put back by kombu as a new row, so delivered rows are never needed again: the dispatch tick
deletes them, and SQLite reuses their pages, which keeps the file's size flat.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from research_runner.settings import Settings

CLEANUP_EVERY_SECONDS = 60.0
MESSAGE_TABLE = "kombu_message"  # kombu's default message_tablename
_last_cleanup = 0.0
_declared: set[str] = set()  # broker URLs whose queues this process has declared


def declare_queues(settings: Settings, connection: Any, queues: Iterable[str]) -> None:
    """Make the embedded broker's tables and `queues` if missing, once per process, one process at a time."""
    if not settings.embedded or settings.broker_url in _declared:
        return
    with _lock_file(settings).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        channel = connection.default_channel
        for queue in queues:
            channel.queue_declare(queue=queue)
    _declared.add(settings.broker_url)


def close_connections() -> None:
    """Close the embedded broker's connections that kombu keeps for the process. The worker declares its queues
    before it forks beat's process, and a SQLite connection used on both sides of a fork fails with "disk I/O
    error" (every dispatch tick's broker calls failed until the test timed out)."""
    from kombu.transport.sqlalchemy import Channel

    for engine, _ in Channel._engines.values():
        engine.dispose()
    Channel._engines.clear()


def _lock_file(settings: Settings) -> Path:
    url = make_url(settings.broker_url.removeprefix("sqla+"))
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).with_name(Path(url.database).name + ".lock")
    return settings.data_dir / "broker.lock"


def purge_delivered(settings: Settings, force: bool = False) -> int:
    """Delete the embedded broker's delivered messages, at most once a minute; returns how many were deleted."""
    global _last_cleanup
    if not settings.embedded or (not force and time.monotonic() - _last_cleanup < CLEANUP_EVERY_SECONDS):
        return 0
    _last_cleanup = time.monotonic()
    engine = create_engine(settings.broker_url.removeprefix("sqla+"), connect_args={"timeout": 30})
    try:
        with engine.begin() as conn:
            return int(conn.execute(text(f"DELETE FROM {MESSAGE_TABLE} WHERE visible = 0")).rowcount)
    except OperationalError as exc:
        if "no such table" in str(exc):  # nothing was ever sent yet
            return 0
        raise
    finally:
        engine.dispose()
