"""The Celery app and its tasks. Tasks are short: each does one step of a job and returns.

Waiting costs nothing here: a running job is a row with a next poll time, and the periodic dispatch task
turns due rows into poll messages. No task sleeps, and no message is scheduled far in the future.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu.exceptions import OperationalError as BrokerError

from research_runner import batches, db, pipeline, schedules
from research_runner.config import Settings, redact_url
from research_runner.constants import (
    DISPATCH_QUEUE,
    ENDED_STATUSES,
    JOBS_PER_MESSAGE,
    POLL_QUEUE,
    QUEUES_BY_PRIORITY,
    REMOTE_RUNNING,
    TASK_DISPATCH,
    TASK_POLL,
    TASK_SUBMIT,
    WORK_QUEUE,
    JobStatus,
)
from research_runner.exceptions import ServiceUnavailable
from research_runner.gateway import Gateway
from research_runner.models import Job
from research_runner.scheduler import BEAT_SCHEDULER, beat_schedule

log = logging.getLogger("research_runner.worker")
BROKER_CONNECT_TIMEOUT = 5.0
HTTP_CLIENT_LOGGERS = ("httpx", "httpx2")
TASK_LABEL_CHARS = 60  # of the question, in a task's arguments as Flower shows them


class _PerProcess:
    """The SDK client and the poll threads are made lazily in each worker process, never shared across a fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._made: tuple[int, Gateway, ThreadPoolExecutor] | None = None

    def _ensure(self) -> tuple[int, Gateway, ThreadPoolExecutor]:
        if self._made is None or self._made[0] != os.getpid():
            # One thread per job of a message, so its API calls overlap instead of queueing. Per process, so a
            # process never needs more database connections than its engine's pool keeps (5 + 10 overflow).
            threads = ThreadPoolExecutor(max_workers=JOBS_PER_MESSAGE, thread_name_prefix="research-step")
            self._made = (os.getpid(), Gateway(self.settings), threads)
        return self._made

    def gateway(self) -> Gateway:
        return self._ensure()[1]

    def threads(self) -> ThreadPoolExecutor:
        return self._ensure()[2]


def create_app(settings: Settings) -> Celery:
    app = Celery("research_runner", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=WORK_QUEUE,
        task_routes={TASK_DISPATCH: {"queue": DISPATCH_QUEUE}, TASK_POLL: {"queue": POLL_QUEUE}},
        task_ignore_result=True,
        # Steps are idempotent, so ack after the step: a crash mid-step leaves the message for another worker.
        task_acks_late=True,
        # A message already carries several jobs; reserving more would let them wait behind each other.
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # kombu hands these to SQLAlchemy: writers to the SQLite broker file wait for each other, not fail.
        broker_transport_options={"connect_args": {"timeout": 30}}
        if settings.embedded
        else {"queue_order_strategy": "priority"},  # Redis: read the queues in the order the worker lists them
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        beat_schedule=beat_schedule(settings),
        beat_scheduler=BEAT_SCHEDULER,
    )
    _register_tasks(app, settings)
    return app


def _register_tasks(app: Celery, settings: Settings) -> None:
    # shared=False: a shared task would also be registered in every app made later in this process, whose own
    # task of that name (closing over its own settings) would then be ignored.
    state = _PerProcess(settings)

    @app.task(name=TASK_SUBMIT, shared=False)  # type: ignore[untyped-decorator]
    def submit(job_ids: list[str] | str) -> list[dict[str, Any]]:
        ids = _as_list(job_ids)
        pipeline.start_many(settings, state.gateway(), ids, state.threads().map)
        found = {job.id: job for job in pipeline.load_many(settings, ids)}
        return [_describe(job_id, found.get(job_id), after_submit=True) for job_id in ids]

    @app.task(name=TASK_POLL, shared=False)  # type: ignore[untyped-decorator]
    def poll(job_ids: list[str] | str) -> list[dict[str, Any]]:
        ids = _as_list(job_ids)
        polled = pipeline.poll_many(settings, state.gateway(), ids, state.threads().map)
        return [_poll_summary(settings, job_id, result) for job_id, result in polled.items()]

    @app.task(name=TASK_DISPATCH, shared=False)  # type: ignore[untyped-decorator]
    def dispatch() -> dict[str, int]:
        fired = schedules.fire_due(settings)  # before claiming, so a firing's jobs start in this tick
        reaped = pipeline.reap_interrupted_creates(settings)
        due = pipeline.claim_due(settings)
        # Polls first: they are due now and quick, while a burst of creates can take a while to drain.
        for name, status in ((TASK_POLL, JobStatus.RUNNING), (TASK_SUBMIT, JobStatus.QUEUED)):
            _send_in_batches(app, settings, name, [(job_id, start) for job_id, s, start in due if s == status])
        digests = batches.finalize_ready(settings)
        return {
            "dispatched": len(due),
            "interrupted_creates": reaped,
            "schedules_fired": len(fired),
            "digests_written": len(digests),
        }


def _as_list(job_ids: list[str] | str) -> list[str]:
    return [job_ids] if isinstance(job_ids, str) else job_ids  # messages from before steps were batched


def _send_in_batches(app: Celery, settings: Settings, name: str, due: list[tuple[str, str]]) -> None:
    for at in range(0, len(due), JOBS_PER_MESSAGE):
        batch = due[at : at + JOBS_PER_MESSAGE]
        app.send_task(
            name, args=[[job_id for job_id, _ in batch]], argsrepr=task_label(batch), expires=settings.lease_seconds
        )


def _poll_summary(settings: Settings, job_id: str, polled: pipeline.Polled | None) -> dict[str, Any]:
    if polled is None:
        return {"job_id": job_id, "status": "skipped"}
    log.info("job %s polled: %s (%.2f s late)", job_id[:8], polled.remote_status or "no answer", polled.lateness)
    if polled.remote_status in REMOTE_RUNNING:
        return {
            "job_id": job_id,
            "status": JobStatus.RUNNING,
            "remote_status": polled.remote_status,
            "lateness": round(polled.lateness, 3),
        }
    # It has ended, or the API did not answer (which may have timed it out): read back what is stored.
    return _summary(settings, job_id)


def _summary(settings: Settings, job_id: str) -> dict[str, Any]:
    return _describe(job_id, pipeline.load(settings, job_id))


def _describe(job_id: str, job: Job | None, *, after_submit: bool = False) -> dict[str, Any]:
    """The task's result (Flower shows it), logging the job's events: one line each, no secrets."""
    if job is None:
        return {"job_id": job_id, "status": "missing"}
    if after_submit:
        created = f" (interaction {job.interaction_id})" if job.interaction_id else ""
        log.info("job %s submitted: %s%s", job.short_id, job.status, created)
    summary = {"job_id": job.id, "status": job.status, "title": job.report_title, "report_path": job.report_path}
    if job.status in ENDED_STATUSES:
        log.info(
            "job %s finished: %s (polls: %d, report: %s)",
            job.short_id,
            job.status,
            job.poll_count,
            job.report_path or "none",
        )
        summary["error"] = job.error
    return summary


def task_label(jobs: list[tuple[str, str]]) -> str:
    """What Flower shows as a task's arguments: each job's id and its question's start, never more."""
    return repr([_label(job_id, question) for job_id, question in jobs])


def _label(job_id: str, question: str) -> tuple[str, str]:
    start = " ".join(question.split())
    return job_id, start if len(start) <= TASK_LABEL_CHARS else start[: TASK_LABEL_CHARS - 1] + "…"


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_connections_after_fork(**_: Any) -> None:
    db.dispose_engines()


@contextmanager
def _broker(app: Celery, settings: Settings) -> Iterator[Any]:
    """A connection to the broker, or ServiceUnavailable naming the URL and the fix."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.2, timeout=BROKER_CONNECT_TIMEOUT)
            yield conn
    except (BrokerError, OSError) as exc:
        raise ServiceUnavailable(
            f"cannot reach the broker at {redact_url(settings.broker_url)} ({exc}); "
            "check RESEARCH_BROKER_URL and that the broker is running"
        ) from None


def check_broker(app: Celery, settings: Settings) -> None:
    """Fail early, with the fix, when the broker cannot be reached."""
    with _broker(app, settings):
        pass


def enqueue(app: Celery, settings: Settings, job_id: str, question: str | None = None) -> None:
    """Send a job's first step now; a broker that cannot be reached is the caller's error to report."""
    if question is None:
        job = pipeline.load(settings, job_id)
        question = job.question if job else ""
    with _broker(app, settings) as conn:
        app.send_task(
            TASK_SUBMIT,
            args=[[job_id]],
            argsrepr=task_label([(job_id, question)]),
            connection=conn,
            retry=False,
            expires=settings.lease_seconds,
        )


def run_worker(app: Celery, settings: Settings, *, beat: bool, pool: str | None, loglevel: str) -> None:
    # The SDK's HTTP client logs every request at INFO: a line per poll, already told by our own job lines.
    for name in HTTP_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    argv = [
        "worker",
        f"--concurrency={settings.worker_concurrency}",
        f"--loglevel={loglevel}",
        f"--queues={','.join(QUEUES_BY_PRIORITY)}",
    ]
    if settings.task_events:
        argv.append("--events")
    if beat:
        argv += ["--beat", f"--scheduler={BEAT_SCHEDULER}"]
    if pool:
        argv.append(f"--pool={pool}")
    app.worker_main(argv)
