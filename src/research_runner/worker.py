"""The Celery app, its queues and tasks. Tasks are short: each does one step of a few jobs and returns.

Waiting costs nothing here: a running job is a row with a next poll time, and the dispatch tick (beat.py) turns
due rows into poll messages. No task sleeps, and no message is scheduled far in the future.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.signals import worker_process_init
from kombu.exceptions import OperationalError as BrokerError

from research_runner import beat, broker, db, display, lifecycle, store
from research_runner.exceptions import ServiceUnavailable
from research_runner.models import Job
from research_runner.settings import Settings, redact_url
from research_runner.status import ENDED_STATUSES, REMOTE_RUNNING, JobStatus

if TYPE_CHECKING:  # the SDK is imported by the worker processes that call the API, not by every sender
    from research_runner.gateway import Gateway

TASK_SUBMIT = "research.submit"
TASK_POLL = "research.poll"
WORK_QUEUE = "research"  # creates, and anything sent without a route
# Workers read their queues in turn (round robin on Redis), so neither waits for the other to drain; the
# dispatcher hands out creates under their own per-tick budget, which shrinks while steps wait in the broker
# or handed-out polls lag (beat.creates_cap, creates_budget), so a burst of creates fills what the polls leave.
POLL_QUEUE = "research.poll"
QUEUES = (POLL_QUEUE, WORK_QUEUE)
# Jobs stepped (created or polled) by one message: fewer messages cost the worker less, and a message's API
# calls overlap on the worker process's threads. Each message costs the worker ~1 ms of CPU before its jobs'
# own (kombu's delivery and ack bookkeeping on Redis, Celery's tracing, a load and a write per message), about a
# third of the worker's CPU with 8 jobs a message at 2,000 jobs in flight (issue 16, profiled with py-spy), ~6%
# with 16 a message in the 10,000-job burst; 32 halve that again.
JOBS_PER_MESSAGE = 32
# Step threads per message the process runs at once: enough for the API calls of a message to overlap.
STEP_THREADS_PER_MESSAGE = 8
STEP_TASKS = {JobStatus.RUNNING: TASK_POLL, JobStatus.QUEUED: TASK_SUBMIT}

log = logging.getLogger("research_runner.worker")
BROKER_CONNECT_TIMEOUT = 5.0
HTTP_CLIENT_LOGGERS = ("httpx", "httpx2")
TASK_LABEL_CHARS = 60  # of the question, in a task's arguments as Flower shows them


class _PerProcess:
    """The SDK client and the poll threads are made lazily in each worker process, never shared across a fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._made: tuple[int, Gateway, ThreadPoolExecutor] | None = None
        self._making = threading.Lock()  # the threads pool's first tasks arrive together

    def _ensure(self) -> tuple[int, Gateway, ThreadPoolExecutor]:
        made = self._made
        if made is not None and made[0] == os.getpid():
            return made
        with self._making:
            return self._make()

    def _make(self) -> tuple[int, Gateway, ThreadPoolExecutor]:
        if self._made is None or self._made[0] != os.getpid():
            # Threads for the jobs of the messages in flight, so their API calls overlap instead of queueing;
            # with the threads pool a process runs `worker_concurrency` messages at once. Threads start only
            # when needed, so a prefork child (one message at a time) never has more than JOBS_PER_MESSAGE.
            from research_runner.gateway import Gateway

            size = STEP_THREADS_PER_MESSAGE * self.settings.worker_concurrency
            threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="research-step")
            self._made = (os.getpid(), Gateway(self.settings), threads)
            freeze_long_lived()
        return self._made

    def gateway(self) -> Gateway:
        return self._ensure()[1]

    def threads(self) -> ThreadPoolExecutor:
        return self._ensure()[2]


def freeze_long_lived() -> None:
    """Keep the cyclic garbage collector off the objects that live as long as the process: the modules, classes
    and clients now loaded (~200,000 objects, most of them the SDK's and SQLAlchemy's). Every full collection
    walked them all again: 12% of a step's CPU, 4% once frozen (benchmarks/step_cost.py, issue 16)."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings) -> Celery:
    app = Celery("research_runner", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=WORK_QUEUE,
        task_routes={TASK_POLL: {"queue": POLL_QUEUE}},
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
        else {"queue_order_strategy": "round_robin"},  # Redis: each queue in turn, a fair share for each
        worker_send_task_events=settings.task_events,
        # No "sent" events: every process that sends a task (each CLI call, each beat) would add its own label
        # to Flower's /metrics for good. Workers' received/started/succeeded events show every task anyway.
        task_send_sent_event=False,
        beat_schedule=beat.beat_schedule(settings),
        beat_scheduler=beat.SCHEDULER,
    )
    _register_tasks(app, settings)
    # The beat scheduler runs the dispatch tick itself (beat.DispatchScheduler): ticks are not tasks.
    app.research_dispatch = beat.Dispatcher(
        settings, lambda status, due: _send_in_batches(app, settings, status, due), lambda: waiting_jobs(app)
    ).tick
    return app


def _register_tasks(app: Celery, settings: Settings) -> None:
    # shared=False: a shared task would also be registered in every app made later in this process, whose own
    # task of that name (closing over its own settings) would then be ignored.
    state = _PerProcess(settings)

    @app.task(name=TASK_SUBMIT, shared=False)  # type: ignore[untyped-decorator]
    def submit(job_ids: list[str] | str) -> list[dict[str, Any]]:
        ids = _as_list(job_ids)
        found = {job.id: job for job in lifecycle.start_many(settings, state.gateway(), ids, state.threads().map)}
        rest = [job_id for job_id in ids if job_id not in found]  # not created: read back what became of them
        found |= {job.id: job for job in store.load_many(settings, rest)} if rest else {}
        return [_describe(job_id, found.get(job_id), after_submit=True, web_url=settings.web_url) for job_id in ids]

    @app.task(name=TASK_POLL, shared=False)  # type: ignore[untyped-decorator]
    def poll(job_ids: list[str] | str) -> list[dict[str, Any]]:
        ids = _as_list(job_ids)
        polled = lifecycle.poll_many(settings, state.gateway(), ids, state.threads().map)
        return [_poll_summary(settings, job_id, result) for job_id, result in polled.items()]


def _as_list(job_ids: list[str] | str) -> list[str]:
    return [job_ids] if isinstance(job_ids, str) else job_ids  # messages from before steps were batched


def _send_in_batches(app: Celery, settings: Settings, status: JobStatus, due: list[tuple[str, str]]) -> None:
    name = STEP_TASKS[status]
    for at in range(0, len(due), JOBS_PER_MESSAGE):
        batch = due[at : at + JOBS_PER_MESSAGE]
        app.send_task(
            name, args=[[job_id for job_id, _ in batch]], argsrepr=task_label(batch), expires=settings.lease_seconds
        )


def waiting_jobs(app: Celery) -> int:
    """About how many jobs' steps wait in the broker, unread by any worker (each message counted as full)."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        return JOBS_PER_MESSAGE * sum(int(channel.queue_declare(queue=name).message_count) for name in QUEUES)


def _poll_summary(settings: Settings, job_id: str, polled: lifecycle.Polled | None) -> dict[str, Any]:
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
    return _describe(job_id, store.load(settings, job_id), web_url=settings.web_url)


def _describe(
    job_id: str, job: Job | None, *, after_submit: bool = False, web_url: str | None = None
) -> dict[str, Any]:
    """The task's result (Flower shows it), logging the job's events: one line each, no secrets.

    With RESEARCH_WEB_URL set it carries the job's page, so a user who starts in Flower reaches the report."""
    if job is None:
        return {"job_id": job_id, "status": "missing"}
    if after_submit:
        created = f" (interaction {job.interaction_id})" if job.interaction_id else ""
        log.info("job %s submitted: %s%s", job.short_id, job.status, created)
    summary = {"job_id": job.id, "status": job.status, "title": job.report_title, "report_path": job.report_path}
    if web_url:
        summary["web_url"] = f"{web_url}/jobs/{job.id}"
    if job.status == JobStatus.PLAN_READY:  # not an end: the user reviews the plan, then approves or revises
        log.info("job %s: %s, then approve or revise it", job.short_id, display.plan_hint(job))
        summary["next"] = display.plan_hint(job)
    elif job.status in ENDED_STATUSES:
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
    return job_id, display.preview(question, TASK_LABEL_CHARS)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_connections_after_fork(**_: Any) -> None:
    db.dispose_engines()


@contextmanager
def _broker(app: Celery, settings: Settings) -> Iterator[Any]:
    """A connection to the broker, or ServiceUnavailable naming the URL and the fix."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.2, timeout=BROKER_CONNECT_TIMEOUT)
            broker.declare_queues(settings, conn, QUEUES)
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
        job = store.load(settings, job_id)
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


def run_worker(
    app: Celery, settings: Settings, *, with_beat: bool, pool: str | None, loglevel: str, name: str | None = None
) -> None:
    """Run a worker in the foreground. Its default name carries the process id, so that several workers on one
    machine never share a name (Celery's default, celery@host, would make them look like one)."""
    # The SDK's HTTP client logs every request at INFO: a line per poll, already told by our own job lines.
    for logger in HTTP_CLIENT_LOGGERS:
        logging.getLogger(logger).setLevel(logging.WARNING)
    argv = [
        "worker",
        f"--concurrency={settings.worker_concurrency}",
        f"--loglevel={loglevel}",
        f"--queues={','.join(QUEUES)}",
        f"--hostname={name or f'research-{os.getpid()}@%h'}",
    ]
    if settings.task_events:
        argv.append("--events")
    if with_beat:
        argv += ["--beat", f"--scheduler={beat.SCHEDULER}"]
    if pool:
        argv.append(f"--pool={pool}")
    if settings.embedded:  # its queues made before Celery's consumer races a sender to make them
        check_broker(app, settings)
        broker.close_connections()
    app.worker_main(argv)
