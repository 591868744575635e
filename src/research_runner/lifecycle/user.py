"""What the user decides about a job: approve or revise its plan, ask a follow-up, cancel it, or abandon it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from research_runner import outcome, store
from research_runner.exceptions import (
    InvalidJobState,
    JobNotFound,
    PermanentError,
)
from research_runner.lifecycle.steps import record
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.snapshot import Snapshot
from research_runner.status import ACTIVE_STATUSES, ATTENTION_STATUSES, REMOTE_TERMINAL, JobStatus, utcnow
from research_runner.validation import clean_question

if TYPE_CHECKING:  # the SDK is imported only where a gateway is built
    from research_runner.gateway import Gateway


# What `approve` sends: Google's sample confirms a plan in plain words, with collaborative_planning false.
APPROVAL = "The plan looks good: go ahead with the research."
FOLLOW_UP_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.REQUIRES_ACTION})
WAIT_TICK = 0.5


def approve(settings: Settings, ref: str, note: str | None = None) -> Job:
    """Confirm a job's plan: the next turn runs the research, and the job goes on as before."""
    text = APPROVAL + (f" {note.strip()}" if note and note.strip() else "")
    return _continue(settings, store.find(settings, ref), text, planning=False)


def revise(settings: Settings, ref: str, change: str) -> Job:
    """Ask for a different plan: the next turn answers with a revised plan, which waits for the user again."""
    return _continue(settings, store.find(settings, ref), clean_question(change), planning=True)


def _continue(settings: Settings, job: Job, text: str, *, planning: bool) -> Job:
    if job.status != JobStatus.PLAN_READY:
        raise InvalidJobState(f"job {job.short_id} is {job.status}; only a job whose plan is ready (plan_ready) "
                              "can be approved or revised")  # fmt: skip
    config = json.loads(job.agent_config or "{}") | {"collaborative_planning": planning}
    if not store.transition(
        settings, job.id, [JobStatus.PLAN_READY], status=JobStatus.QUEUED, agent_config=json.dumps(config),
        next_input=text, next_poll_at=utcnow(), lease_until=None, error=None,
    ):  # fmt: skip
        raise InvalidJobState(f"job {job.short_id} changed meanwhile; look at it again with `research status`")
    return reload(settings, job.id)


def ask(settings: Settings, ref: str, question: str, agent_config: dict[str, Any] | None = None) -> Job:
    """A follow-up question on a finished report: a new job in the thread, continuing its interaction."""
    parent = store.find(settings, ref)
    if parent.status not in FOLLOW_UP_STATUSES or not parent.interaction_id:
        raise InvalidJobState(f"job {parent.short_id} is {parent.status}; follow-up questions need a completed job "
                              "(or one waiting for input: requires_action)")  # fmt: skip
    job = store.new_job(settings, clean_question(question), parent.agent, held=False, agent_config=agent_config)
    job.parent_id, job.previous_interaction_id = parent.id, parent.interaction_id
    return store.add(settings, job)


def cancel(settings: Settings, ref: str, gateway_factory: Callable[[], Gateway]) -> Job:
    job = store.find(settings, ref)
    if job.status == JobStatus.PLAN_READY:
        return _drop_plan(settings, job)
    if job.status in ATTENTION_STATUSES and job.interaction_id:
        return _cancel_waiting(settings, job, gateway_factory())
    if job.status not in ACTIVE_STATUSES:
        raise InvalidJobState(f"job {job.short_id} has already ended ({job.status}); there is nothing to cancel")
    if job.status == JobStatus.QUEUED and store.transition(
        settings,
        job.id,
        [JobStatus.QUEUED],
        status=JobStatus.CANCELLED,
        finished_at=utcnow(),
        next_poll_at=None,
        lease_until=None,
        error="cancelled by the user before it started",
    ):
        return reload(settings, job.id)
    job = await_interaction(settings, job.id, timeout=30.0)  # a create may be in flight
    if job.status not in ACTIVE_STATUSES:
        raise InvalidJobState(f"job {job.short_id} has already ended ({job.status}); there is nothing to cancel")
    if job.interaction_id is None:
        raise InvalidJobState(f"job {job.short_id} is still being submitted; try again in a minute")
    gateway = gateway_factory()
    if job.api_endpoint not in (None, gateway.endpoint):
        return _cancel_elsewhere(settings, job, gateway)
    try:
        snapshot = gateway.cancel(job.interaction_id)
    except PermanentError:
        # The API refuses to cancel an interaction that has ended: record how it ended instead.
        snapshot = gateway.get(job.interaction_id)
    record(settings, job, snapshot)
    job = reload(settings, job.id)
    if job.status in ACTIVE_STATUSES:  # never report a refused cancel as a cancel
        raise InvalidJobState(f"the API did not cancel job {job.short_id}: it reports {snapshot.status}; try again")
    return job


def _drop_plan(settings: Settings, job: Job) -> Job:
    """The plan's interaction has ended (it completed with the plan): nothing runs, so the job just ends here."""
    if not store.transition(
        settings, job.id, [JobStatus.PLAN_READY], status=JobStatus.CANCELLED, finished_at=utcnow(), next_poll_at=None,
        lease_until=None, error="cancelled by the user while its research plan waited for review",
    ):  # fmt: skip
        raise InvalidJobState(f"job {job.short_id} changed meanwhile; look at it again with `research status`")
    return reload(settings, job.id)


def _cancel_elsewhere(settings: Settings, job: Job, gateway: Gateway) -> Job:
    """The interaction lives at another endpoint (e.g. a private emulator that is gone): never ask this one
    about it, since the same id there is another interaction. The job ends here, and says so."""
    store.transition(
        settings, job.id, [job.status], status=JobStatus.CANCELLED, finished_at=utcnow(), next_poll_at=None,
        lease_until=None, error=f"cancelled by the user; its interaction at {job.api_endpoint} was not contacted "
        f"(this runner talks to {gateway.endpoint})",
    )  # fmt: skip
    return reload(settings, job.id)


def _cancel_waiting(settings: Settings, job: Job, gateway: Gateway) -> Job:
    """A job waiting on the user (needs_attention, requires_action) may hold a live interaction: stop it."""
    assert job.interaction_id is not None
    if job.api_endpoint not in (None, gateway.endpoint):
        return _cancel_elsewhere(settings, job, gateway)
    try:
        snapshot: Snapshot | None = gateway.cancel(job.interaction_id)
    except PermanentError:
        snapshot = _ended_as(gateway, job.interaction_id)  # the API refuses to cancel what has ended: see how
    if snapshot is None:  # the API no longer knows the interaction either: nothing is left to stop
        store.transition(
            settings,
            job.id,
            [job.status],
            status=JobStatus.CANCELLED,
            finished_at=utcnow(),
            error=f"cancelled by the user; the API no longer reports on interaction {job.interaction_id}",
        )
    elif snapshot.status in REMOTE_TERMINAL and snapshot.status != JobStatus.REQUIRES_ACTION:
        outcome.finish(settings, job, snapshot, from_statuses=[job.status])
    else:  # still waiting, or a status we do not know: the user has decided, so it ends here
        store.transition(
            settings,
            job.id,
            [job.status],
            status=JobStatus.CANCELLED,
            remote_status=snapshot.status,
            finished_at=utcnow(),
            error=f"cancelled by the user while it was {job.status}"
            + (f"; before that: {job.error}" if job.error else ""),
        )
    return reload(settings, job.id)


def _ended_as(gateway: Gateway, interaction_id: str) -> Snapshot | None:
    try:
        return gateway.get(interaction_id)
    except PermanentError:
        return None


def abandon(settings: Settings, job_id: str, reason: str) -> None:
    """Mark an unfinished job cancelled without asking the API (its interaction is gone with its server)."""
    store.transition(
        settings,
        job_id,
        ACTIVE_STATUSES,
        status=JobStatus.CANCELLED,
        finished_at=utcnow(),
        next_poll_at=None,
        lease_until=None,
        error=reason,
    )


def await_interaction(settings: Settings, job_id: str, timeout: float | None = None) -> Job:
    """The job once a worker has created its interaction, or has ended it, or `timeout` seconds have passed.

    The database is polled: there is nothing to subscribe to.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = reload(settings, job_id)
        if job.interaction_id or job.status not in ACTIVE_STATUSES:
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(WAIT_TICK)


def reload(settings: Settings, job_id: str) -> Job:
    job = store.load(settings, job_id)
    if job is None:
        raise JobNotFound(f"job {job_id} disappeared")
    return job
