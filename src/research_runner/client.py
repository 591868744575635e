"""Client: the Python API of research-runner. The CLI, the web pages and notebooks all go through it.

    from research_runner import Client

    client = Client()                          # settings from RESEARCH_* variables, or Client(settings)
    job = client.submit("How do heat pumps cope with very cold winters?").job
    job = client.wait(job.id)
    print(job.status, job.report_path)

The Client owns the settings, checks (or creates) the database schema once, and makes the broker connection
and the API gateway only when a method needs them, so reading jobs never imports Celery or the SDK.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from research_runner import attachments, batches, batchfile, db, deletion, leases, lifecycle, pricing, schedules, store
from research_runner.batchfile import Item
from research_runner.exceptions import InvalidInput, InvalidJobState
from research_runner.lifecycle import Review as Review  # a run's plan reviewer: part of this API
from research_runner.models import Batch, Job, JobTurn, Schedule
from research_runner.settings import Settings, load_settings
from research_runner.status import ACTIVE_STATUSES, JobStatus, utcnow
from research_runner.validation import clean_agent, clean_key, clean_question

if TYPE_CHECKING:
    from celery import Celery

    from research_runner.gateway import Gateway

Progress = Callable[[Job], None]
BatchProgress = Callable[[Batch, list[Job]], None]
WAIT_TICK = 0.5


@dataclass(frozen=True)
class Submitted:
    """A submit's outcome: the job, and whether this call created it (False: its idempotency key was known)."""

    job: Job
    created: bool


@dataclass(frozen=True)
class BatchSubmitted:
    """A batch's outcome: the stored batch, and how many items were skipped as already submitted."""

    batch: Batch
    skipped: int


def _ignore(*_: Any) -> None:
    pass


class Client:
    """Submit, follow and manage deep research jobs, batches and schedules."""

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = settings if settings is not None else load_settings(**overrides)
        self._schema_checked = False
        self._celery: Celery | None = None

    # -- plumbing -------------------------------------------------------------------------------------------

    @property
    def db(self) -> Settings:
        """The settings, once the database exists with the schema this version needs (checked once)."""
        if not self._schema_checked:
            db.ensure_schema(self.settings)
            self._schema_checked = True
        return self.settings

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            from research_runner.worker import create_app

            self._celery = create_app(self.settings)
        return self._celery

    def gateway(self, settings: Settings | None = None) -> Gateway:
        from research_runner.gateway import Gateway

        return Gateway(settings or self.settings)

    def check_broker(self) -> None:
        """Raise ServiceUnavailable, with the fix, when the broker cannot be reached."""
        from research_runner.worker import check_broker

        check_broker(self.celery, self.settings)

    def stalled(self, after_seconds: float = 90.0) -> int:
        """How many jobs have been due for longer than `after_seconds` without being handed out: with a few, no
        worker (or scheduler) runs the dispatch tick."""
        count, _ = leases.overdue(self.db, utcnow() - timedelta(seconds=after_seconds))
        return count

    def upgrade_db(self) -> tuple[str | None, str | None]:
        """Migrate the database to the newest schema; returns (before, after) revisions."""
        return db.upgrade(self.settings)

    # -- jobs -----------------------------------------------------------------------------------------------

    def submit(
        self,
        question: str,
        *,
        agent: str | None = None,
        idempotency_key: str | None = None,
        retry_of: str | None = None,
        charts: bool | None = None,
        plan: bool = False,
        files: Sequence[Path] = (),
    ) -> Submitted:
        """Store a job and send its first step to the workers. A known idempotency key returns its job.

        `charts` overrides RESEARCH_VISUALIZATION; `plan` asks for a research plan to review first (the job then
        waits in plan_ready for `approve` or `revise`); `files` are images or PDFs sent with the question.
        """
        key = clean_key(idempotency_key)
        job, found = self._new_job(self.settings, question, agent, charts=charts, plan=plan, files=files)
        existing = self._known(key, job.question)
        if existing is not None:
            return Submitted(existing, False)
        job.idempotency_key, job.retry_of = key, retry_of
        try:
            store.add_with_files(self.db, job, found)
        except IntegrityError:  # the same key was submitted concurrently and the other submit won
            existing = self._known(key, job.question)
            if existing is None:
                raise
            return Submitted(existing, False)
        try:
            self._enqueue(job)
        except BaseException:
            store.forget(self.settings, job.id)  # nothing half-stored when the broker is down
            raise
        return Submitted(job, True)

    def _new_job(
        self, settings: Settings, question: str, agent: str | None, *, charts: bool | None, plan: bool,
        files: Sequence[Path],
    ) -> tuple[Job, list[attachments.Attachment]]:  # fmt: skip
        """A new job row and its files, every input checked before anything is stored."""
        question, agent = clean_question(question), clean_agent(agent or settings.agent)
        found = attachments.read(list(files))
        config = settings.agent_config(charts=charts, planning=plan)
        job = store.new_job(settings, question, agent, agent_config=config)
        job.files = json.dumps([a.describe() for a in found]) if found else None
        return job, found

    def _known(self, key: str | None, question: str) -> Job | None:
        job = store.by_idempotency_key(self.db, key) if key else None
        if job is not None and job.question != question:
            raise InvalidInput(
                f"idempotency key {key!r} was already used by job {job.short_id} for another question; "
                "use a new key for a new question"
            )
        return job

    def _enqueue(self, job: Job) -> None:
        from research_runner.worker import enqueue

        enqueue(self.celery, self.settings, job.id, job.question)

    def get(self, ref: str) -> Job:
        """A job by its id or a unique prefix of it (4+ characters)."""
        return store.find(self.db, ref)

    def list_jobs(self, status: str | None = None, limit: int = 20, batch: str | None = None) -> list[Job]:
        """Jobs, newest first (a batch's jobs in the batch's order)."""
        batch_id = self.batch(batch).id if batch else None
        return store.list_jobs(self.db, status, limit, batch_id)

    def cancel(self, ref: str) -> Job:
        """Cancel a job that has not ended, on Google's side too, or stop one waiting on the user."""
        return lifecycle.cancel(self.db, ref, self.gateway)

    def retry(self, ref: str) -> Job:
        """Start a new job for one that ended without completing; the old one stays as it is."""
        job = self.get(ref)
        new = store.add_retry(self.db, _retryable(job))
        try:
            self._enqueue(new)
        except BaseException:
            store.forget(self.settings, new.id)  # nothing half-stored when the broker is down
            raise
        return new

    def retry_many(self, refs: Sequence[str] = (), *, status: str | None = None, batch: str | None = None) -> list[Job]:
        """Retry the jobs named, and those in `status` (within `batch`) not retried yet: one transaction, and the
        dispatcher starts them within a tick. Nothing is retried unless asked for."""
        named = [_retryable(self.get(ref)) for ref in refs]
        if status is None and batch is None:
            chosen = named
        else:
            batch_id = self.batch(batch).id if batch else None
            found = store.not_retried(self.db, status or JobStatus.NEEDS_ATTENTION, batch_id)
            chosen = named + [job for job in found if job.id not in {n.id for n in named}]
        if not chosen:
            raise InvalidInput("no job to retry: name jobs, or a --status/--batch that has some not retried yet")
        return store.add_retries(self.db, [_retryable(job) for job in chosen])

    def wait(self, ref: str, progress: Progress = _ignore, timeout: float | None = None) -> Job:
        """Watch the database until a worker has taken the job to its end (or `timeout` seconds pass)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(ref)
        while True:
            with lifecycle.shielded():  # under lifecycle.interruptible, Ctrl-C lands between steps, not inside
                progress(job)
            if job.status not in ACTIVE_STATUSES or (deadline is not None and time.monotonic() > deadline):
                return job
            time.sleep(WAIT_TICK)
            with lifecycle.shielded():
                job = lifecycle.reload(self.settings, job.id)

    def run(
        self,
        question: str,
        *,
        agent: str | None = None,
        emulator: bool | None = None,
        progress: Progress = _ignore,
        notice: Callable[[str], None] = _ignore,
        charts: bool | None = None,
        plan: bool = False,
        files: Sequence[Path] = (),
        review: Review | None = None,
    ) -> Job:
        """Research a question in this process, without broker or worker, and return the finished job.

        `emulator` (default: only when no API key is set) runs it against a private local emulator. With `plan`,
        `review` is shown each plan and returns None to approve it or the changes to ask for; without `review`
        the job stops in plan_ready.
        """
        with lifecycle.api_settings(self.settings, emulator, notice) as (api, private):
            gateway = self.gateway(api)  # key and settings are checked before anything is stored
            job, found = self._new_job(api, question, agent, charts=charts, plan=plan, files=files)
            store.add_with_files(self.db, job, found)
            with lifecycle.interruptible():
                try:
                    return lifecycle.run_thread(api, job.id, gateway, progress, review)
                except KeyboardInterrupt:
                    lifecycle.interrupted(self.settings, job.id, private, notice)
                    raise

    # -- threads: plans and follow-ups -----------------------------------------------------------------------

    def approve(self, ref: str, note: str | None = None) -> Job:
        """Confirm a job's research plan: the same job goes on to run the research."""
        return lifecycle.approve(self.db, ref, note)

    def revise(self, ref: str, change: str) -> Job:
        """Ask for a different plan; the job waits in plan_ready again once the agent has answered."""
        return lifecycle.revise(self.db, ref, change)

    def ask(self, ref: str, question: str, *, charts: bool | None = None) -> Job:
        """A follow-up question on a completed job: its own job, linked to the parent, run by the workers."""
        return lifecycle.ask(self.db, ref, question, self.settings.agent_config(charts=charts))

    def thread(self, ref: str) -> list[Job]:
        """The job and its follow-ups (and theirs), in the order they were asked."""
        found, queue = [], [self.get(ref)]
        while queue:
            job = queue.pop(0)
            found.append(job)
            queue = store.follow_ups_of(self.settings, job.id) + queue
        return found

    def turns(self, job: Job) -> list[JobTurn]:
        """Every create of the job's thread: its kind, input and interaction id."""
        return store.turns_of(self.db, job.id)

    # -- usage, cost and deletion ---------------------------------------------------------------------------

    def usage(self, since: datetime | None = None, batch: str | None = None) -> list[pricing.UsageRow]:
        """Jobs, tokens, searches and estimated cost per day and agent."""
        batch_id = self.batch(batch).id if batch else None
        return pricing.summarize(store.finished_since(self.db, since, batch_id))

    def delete(self, ref: str, *, remote: bool = True, local: bool = True) -> deletion.Deleted:
        """Delete a finished job's interactions at Google, its local report files, or both."""
        return deletion.delete(self.db, self.get(ref), self.gateway, remote=remote, local=local)

    def purge(self, older_than: timedelta, *, remote: bool = True, local: bool = True, dry_run: bool = False
              ) -> list[deletion.Deleted]:  # fmt: skip
        """Delete what jobs that ended more than `older_than` ago left; `dry_run` says what it would touch."""
        found = deletion.purge_candidates(self.db, utcnow() - older_than, remote=remote, local=local)
        if dry_run:
            return [
                deletion.Deleted(
                    job,
                    deletion.interactions_of(self.settings, job) if remote else [],
                    deletion.local_files(self.settings, job) if local else [],
                )
                for job in found
            ]
        return [deletion.delete(self.settings, job, self.gateway, remote=remote, local=local) for job in found]

    # -- batches --------------------------------------------------------------------------------------------

    def submit_batch(
        self, source: Path | list[Item], *, name: str | None = None, agent: str | None = None,
        charts: bool | None = None,
    ) -> BatchSubmitted:  # fmt: skip
        """Store every question of a batch file (or list of items) as one batch; the workers pick them up."""
        items = batchfile.read(source) if isinstance(source, Path) else source
        default_agent = clean_agent(agent or self.settings.agent)
        label = name if name is not None else (source.stem if isinstance(source, Path) else "batch")
        self.check_broker()
        try:
            with db.session(self.db) as session:
                batch, skipped = batches.add(
                    self.settings,
                    session,
                    label,
                    items,
                    default_agent,
                    source=str(source) if isinstance(source, Path) else None,
                    charts=charts,
                )
        except IntegrityError:
            raise InvalidInput(
                "another batch with the same idempotency keys was submitted at the same time; "
                "run `research batch status` on it, or submit again to skip its keys"
            ) from None
        return BatchSubmitted(batch, skipped)

    def batch(self, ref: str) -> Batch:
        """A batch by id, unique id prefix, or name (the newest of that name)."""
        return batches.find(self.db, ref)

    def batch_jobs(self, batch: Batch) -> list[Job]:
        return batches.jobs_of(self.db, batch.id)

    def wait_batch(self, ref: str, progress: BatchProgress = _ignore, tick: float = 1.0) -> Batch:
        """Wait until every job of the batch has ended and its digest is written."""
        batch = self.batch(ref)
        while True:
            progress(batch, self.batch_jobs(batch))
            if batch.finished_at is not None:
                return batch
            time.sleep(tick)
            batch = self.batch(batch.id)

    # -- schedules ------------------------------------------------------------------------------------------

    def add_schedule(
        self,
        name: str,
        cron: str,
        *,
        queries: tuple[str, ...] = (),
        file: Path | None = None,
        agent: str | None = None,
        timezone: str = "UTC",
        catch_up: bool = True,
    ) -> Schedule:
        """Add a cron schedule whose every due time creates a batch of these questions."""
        if bool(queries) == bool(file):
            raise InvalidInput("give the questions with --query (repeatable) or --file, not both")
        items = batchfile.read(file) if file else [Item(clean_question(q)) for q in queries]
        if any(item.plan or item.files for item in items):
            # A schedule runs unattended and fires long after its file was read: no plan to review, no files.
            raise InvalidInput("a schedule's questions cannot use `plan` or `files`; submit those as a batch")
        agent = clean_agent(agent or self.settings.agent)
        return schedules.add(self.db, name, cron, items, agent, timezone, catch_up)

    def schedules(self) -> list[Schedule]:
        return schedules.all_schedules(self.db)

    def schedule(self, name: str) -> Schedule:
        return schedules.find(self.db, name)

    def pause_schedule(self, name: str, paused: bool = True) -> Schedule:
        return schedules.set_paused(self.db, name, paused)

    def remove_schedule(self, name: str) -> Schedule:
        return schedules.remove(self.db, name)

    def run_schedule_now(self, name: str) -> Batch:
        """Fire a schedule once now; its next run time stays as it was."""
        return schedules.run_now(self.db, name)


def _retryable(job: Job) -> Job:
    if job.status in ACTIVE_STATUSES or job.status in (JobStatus.COMPLETED, JobStatus.PLAN_READY):
        raise InvalidJobState(
            f"job {job.short_id} is {job.status}; only jobs that ended without completing can be retried"
        )
    return job
