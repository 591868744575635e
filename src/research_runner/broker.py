"""Housekeeping of the embedded SQLite broker.

kombu's SQLAlchemy transport marks a message delivered (`visible = false`) instead of deleting it, so the broker
file grew with every task ever sent (celery-notes: "Broker is not a database"). An unacknowledged message that
a worker loses is put back by kombu as a new row, so delivered rows are never needed again: the dispatch tick
deletes them, and SQLite reuses their pages, which keeps the file's size flat.
"""

from __future__ import annotations

import time

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from research_runner.settings import Settings

CLEANUP_EVERY_SECONDS = 60.0
MESSAGE_TABLE = "kombu_message"  # kombu's default message_tablename
_last_cleanup = 0.0


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
