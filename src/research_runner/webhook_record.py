"""Recording verified webhook deliveries: once per `webhook-id`, with the job's poll made due, by group commit.

Each delivery was answered only after its own transaction committed, and that commit (a new SQLite connection,
three ORM statements, an fsync, and on closing the last connection a WAL checkpoint) cost ~4 ms of CPU: about
230 deliveries/s. Now one writer thread per receiver process takes every delivery that arrived meanwhile and
records them together: a few statements and one commit for the whole batch, after which each request is
answered. Nothing is answered before its row is durable, and a quiet receiver still commits each delivery at once
(a batch forms only while the previous commit is in flight). The `webhook-id` stays unique in the database, so
several receivers behind a load balancer still record each delivery once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from research_runner import db
from research_runner.constants import JOB_LABEL
from research_runner.exceptions import ServiceUnavailable
from research_runner.models import Job, WebhookDelivery
from research_runner.settings import Settings
from research_runner.status import JobStatus, utcnow

log = logging.getLogger("research_runner.webhooks")
PING_EVENT = "webhook.ping"
BUSY = "busy"  # the job has a step in flight: nothing is kept and the sender is asked to retry (503)
DUPLICATE = "duplicate"
IDLE_SECONDS = 5.0  # a writer with nothing to do this long stops and gives its connection back
JOBS, DELIVERIES = Job.__table__, WebhookDelivery.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Target:
    event_type: str | None
    interaction_id: str | None
    job_id: str | None


def target_of(payload: dict[str, Any]) -> Target:
    """What a payload points at. Its shape is undocumented, so both a Standard Webhooks envelope
    (`type` + `data`) and the fields at the top level are accepted."""
    data = payload.get("data") if isinstance(payload.get("data"), dict) else payload
    assert isinstance(data, dict)
    metadata = data.get("user_metadata") or payload.get("user_metadata") or {}
    job_id = metadata.get(JOB_LABEL) if isinstance(metadata, dict) else None
    interaction_id = data.get("interaction_id") or data.get("id")
    event = payload.get("type") or payload.get("event_type")
    return Target(
        event_type=str(event)[:64] if event else None,
        interaction_id=str(interaction_id)[:255] if interaction_id else None,
        job_id=str(job_id)[:32] if job_id else None,
    )


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    target: Target
    received_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class JobRef:
    """The few columns a delivery needs: loading whole rows (reports included) would cost more than the rest."""

    id: str
    status: str
    interaction_id: str | None


# ---- one batch, in one transaction -----------------------------------------------------------------------------
_JOB_COLUMNS = (JOBS.c.id, JOBS.c.status, JOBS.c.interaction_id)
_JOBS_BY_ID = select(*_JOB_COLUMNS).where(JOBS.c.id.in_(bindparam("values", expanding=True)))
_JOBS_BY_INTERACTION = select(*_JOB_COLUMNS).where(JOBS.c.interaction_id.in_(bindparam("values", expanding=True)))
# leases.make_due's condition, for many jobs at once: running, and no step in flight (its outcome sets the poll).
_MAKE_DUE = (
    update(JOBS)
    .where(JOBS.c.id.in_(bindparam("ids", expanding=True)), JOBS.c.status == JobStatus.RUNNING,
           or_(JOBS.c.lease_until.is_(None), JOBS.c.lease_until < bindparam("now")))
    .values(next_poll_at=bindparam("now"))
    .returning(JOBS.c.id)
)  # fmt: skip
# Many rows at once with executemany: SQLAlchemy sends them as one multi-row INSERT ("insertmanyvalues"), compiled
# once, where `.values(rows)` would compile a new statement for every batch.
_INSERT_NEW = {
    is_postgres: dialect.insert(DELIVERIES)
    .on_conflict_do_nothing(index_elements=["webhook_id"])
    .returning(DELIVERIES.c.webhook_id)
    for is_postgres, dialect in ((False, sqlite), (True, postgresql))
}
_FORGET = delete(DELIVERIES).where(DELIVERIES.c.webhook_id.in_(bindparam("ids", expanding=True)))


def record_batch(conn: Connection, deliveries: Sequence[Delivery], now: datetime) -> list[str]:
    """Each delivery's outcome; the caller commits. A webhook-id already stored (or earlier in the batch) is a
    duplicate; a job whose step is in flight gets BUSY and its delivery is not kept, so the retry counts."""
    jobs = _jobs_of(conn, [d.target for d in deliveries])
    outcomes = [_outcome(jobs.get(d.target), d.target) for d in deliveries]
    first = {d.webhook_id: i for i, d in reversed(list(enumerate(deliveries)))}
    fresh = [i for i, d in enumerate(deliveries) if first[d.webhook_id] == i and outcomes[i] != BUSY]
    inserted = _insert_new(conn, [_row(deliveries[i], jobs.get(deliveries[i].target), outcomes[i]) for i in fresh])
    for i in fresh:
        outcomes[i] = outcomes[i] if deliveries[i].webhook_id in inserted else DUPLICATE
    _make_due(conn, deliveries, jobs, outcomes, now)
    return [outcomes[i] if first[d.webhook_id] == i else _copy(outcomes[first[d.webhook_id]])
            for i, d in enumerate(deliveries)]  # fmt: skip


def _copy(outcome: str) -> str:
    """A second copy of a delivery in the same batch gets what a retry after the first would have got."""
    return BUSY if outcome == BUSY else DUPLICATE


def _jobs_of(conn: Connection, targets: Sequence[Target]) -> dict[Target, JobRef]:
    """The job each target names: by the job id in user_metadata, else by interaction id (two queries in all)."""
    by_id = _lookup(conn, _JOBS_BY_ID, {t.job_id for t in targets if t.job_id}, 0)
    wanted = {t.interaction_id for t in targets if t.interaction_id and t.job_id not in by_id}
    by_interaction = _lookup(conn, _JOBS_BY_INTERACTION, wanted, 2)
    found = {t: by_id.get(t.job_id or "") or by_interaction.get(t.interaction_id or "") for t in targets}
    return {t: job for t, job in found.items() if job is not None}


def _lookup(conn: Connection, query: Any, values: set[str], key: int) -> dict[str, JobRef]:
    if not values:
        return {}
    rows = conn.execute(query, {"values": sorted(values)}).all()
    return {row[key]: JobRef(row[0], row[1], row[2]) for row in rows}


def _outcome(job: JobRef | None, target: Target) -> str:
    if target.event_type == PING_EVENT:
        return "ping"
    if job is None:
        return "unknown"
    if job.status == JobStatus.SUBMITTING:
        return BUSY  # the create has not returned yet; the retry finds the interaction recorded
    if job.status != JobStatus.RUNNING:
        return "ended"
    if target.interaction_id and job.interaction_id and target.interaction_id != job.interaction_id:
        return "stale"  # an earlier turn of the job's thread
    return "due"


def _row(delivery: Delivery, job: JobRef | None, outcome: str) -> dict[str, Any]:
    target = delivery.target
    return {"webhook_id": delivery.webhook_id, "received_at": delivery.received_at, "outcome": outcome,
            "event_type": target.event_type, "interaction_id": target.interaction_id,
            "job_id": job.id if job else None}  # fmt: skip


def _insert_new(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the rows whose webhook-id is not stored yet (by any receiver); returns the ids inserted."""
    if not rows:
        return set()
    statement = _INSERT_NEW[conn.dialect.name == "postgresql"]
    return set(conn.execute(statement, rows).scalars())


def _make_due(
    conn: Connection, deliveries: Sequence[Delivery], jobs: dict[Target, JobRef], outcomes: list[str], now: datetime
) -> None:
    """Make the jobs of new `due` deliveries due; a job that is leased meanwhile turns its deliveries BUSY."""
    due = [i for i, outcome in enumerate(outcomes) if outcome == "due"]
    if not due:
        return
    ids = sorted({jobs[deliveries[i].target].id for i in due})
    made = set(conn.execute(_MAKE_DUE, {"ids": ids, "now": now}).scalars())
    busy = [i for i in due if jobs[deliveries[i].target].id not in made]
    if busy:
        conn.execute(_FORGET, {"ids": [deliveries[i].webhook_id for i in busy]})
        for i in busy:
            outcomes[i] = BUSY


# ---- the writer thread ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Pending:
    delivery: Delivery
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[str]


class GroupCommit:
    """Records the deliveries of a receiver process in shared transactions, from one writer thread.

    Requests wait on an asyncio future, not in a thread each: the writer answers a whole batch with one wake-up
    of the event loop. It starts with the first delivery, keeps one connection while deliveries come, and stops
    after IDLE_SECONDS without any (a receiver that is not used holds no connection and no thread).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_batch = settings.webhook_batch
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards `_running` against a writer deciding to stop meanwhile
        self._running = False
        self.batches = 0  # transactions committed, for tests and the benchmark

    async def record(self, delivery: Delivery) -> str:
        """The delivery's outcome once its transaction committed; raises ServiceUnavailable."""
        loop = asyncio.get_running_loop()
        pending = _Pending(delivery, loop, loop.create_future())
        with self._lock:
            self._queue.put(pending)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="webhook-writer", daemon=True).start()
        return await pending.answer

    def _run(self) -> None:
        conn: Connection | None = None
        try:
            while batch := self._next_batch():
                conn = self._commit(conn, batch)
        finally:
            if conn is not None:
                conn.close()

    def _next_batch(self) -> list[_Pending]:
        batch = self._drain(IDLE_SECONDS)
        if not batch:
            with self._lock:  # a delivery queued before the lock is taken now; later ones start a new writer
                batch = self._drain(None)
                self._running = bool(batch)
        return batch

    def _drain(self, wait: float | None) -> list[_Pending]:
        batch: list[_Pending] = []
        try:
            batch.append(self._queue.get(timeout=wait) if wait else self._queue.get_nowait())
            while len(batch) < self.max_batch:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _commit(self, conn: Connection | None, batch: list[_Pending]) -> Connection | None:
        """Record a batch and answer its requests; returns the connection to keep (None after a failure)."""
        try:
            conn = conn or db.get_engine(self.settings.database_url).connect()
            with conn.begin():
                outcomes = record_batch(conn, [p.delivery for p in batch], utcnow())
        except Exception as exc:  # the requests must be answered whatever happened
            _discard(conn, exc)
            self._one_by_one(batch, exc)
            return None
        self.batches += 1
        _answer(batch, outcomes)
        return conn

    def _one_by_one(self, batch: list[_Pending], exc: Exception) -> None:
        """A failed batch is tried again a delivery at a time, so a deadlock between receivers or one bad row
        fails only the deliveries it concerns; a delivery that fails alone gets 503 and is sent again."""
        if len(batch) == 1:
            log.warning("webhook delivery %r not recorded: %s", batch[0].delivery.webhook_id[:80], type(exc).__name__)
            _answer(batch, [ServiceUnavailable(f"the delivery could not be recorded ({type(exc).__name__})")])
            return
        conn = None
        for pending in batch:
            conn = self._commit(conn, [pending])
        if conn is not None:
            conn.close()


def _answer(batch: list[_Pending], outcomes: Sequence[str | Exception]) -> None:
    """Settle the batch's futures with one call into each event loop (one wake-up, not one per request)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[str], str | Exception]]] = {}
    for pending, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(pending.loop, []).append((pending.answer, outcome))
    for loop, answers in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, answers)
        except RuntimeError:  # the server stopped meanwhile: nobody waits for these answers any more
            log.info("webhook receiver stopped before %d deliveries were answered", len(answers))


def _settle(answers: list[tuple[asyncio.Future[str], str | Exception]]) -> None:
    for future, outcome in answers:
        if future.done():  # the request was cancelled (its client went away); the delivery is recorded all the same
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _discard(conn: Connection | None, exc: Exception) -> None:
    """Drop a connection after a failure: one the database broke is not given back to the pool."""
    if conn is not None and isinstance(exc, SQLAlchemyError):
        conn.invalidate()
    if conn is not None:
        conn.close()
