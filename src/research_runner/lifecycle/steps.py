"""The steps a worker takes for a running job: poll it with backoff and record what the API says, down to the
terminal transition (outcome.finish) or a plan for the user. Creates are in create.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from research_runner import leases, outcome, pricing, store
from research_runner.constants import JOB_LABEL
from research_runner.exceptions import PermanentError, RetryableError
from research_runner.lifecycle.common import (
    Mapper,
    backoff_delay,
    each_job,
    end_without_report,
    honour_retry_after,
    needs_attention,
    planning,
    running_poll_delay,
    throttle,
)
from research_runner.lifecycle.create import start
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.snapshot import Snapshot
from research_runner.status import ACTIVE_STATUSES, REMOTE_RUNNING, REMOTE_TERMINAL, JobStatus, utcnow

if TYPE_CHECKING:  # the SDK is imported only where a gateway is built
    from research_runner.gateway import Gateway


@dataclass(frozen=True)
class Polled:
    """One poll's outcome, for logs and benchmarks: what the API said, and how late the poll ran."""

    remote_status: str | None  # None when the API could not be asked
    lateness: float


def poll(settings: Settings, gateway: Gateway, job_id: str) -> Polled | None:
    """Ask the API once about a running job and record what it says."""
    job = store.load(settings, job_id)
    return None if job is None else poll_job(settings, gateway, job)


def poll_many(
    settings: Settings, gateway: Gateway, job_ids: list[str], mapper: Mapper = map
) -> dict[str, Polled | None]:
    """Poll several jobs: one query loads them, then each is asked and recorded on its own (None: not polled)."""
    found = store.load_many(settings, job_ids)
    pending: list[dict[str, Any]] = []  # jobs still running: rescheduled together in one round trip
    results, failures = each_job(
        settings, mapper, found, lambda job: poll_job(settings, gateway, job, pending), lambda job: str(job.id)
    )
    polled = dict(zip([job.id for job in found], results, strict=True))
    leases.reschedule_all(settings, pending)  # the others' schedules are written even when one job failed
    if failures:
        raise failures[0]  # the failed jobs keep their lease and are polled again once it lapses
    return {job_id: polled.get(job_id) for job_id in job_ids}


def poll_job(
    settings: Settings, gateway: Gateway, job: Job, pending: list[dict[str, Any]] | None = None
) -> Polled | None:
    """Poll one job loaded a moment ago; its status is checked again by every write.

    A job still running is rescheduled at once, or, given `pending`, added to it for `_reschedule_all`.
    """
    if job.status != JobStatus.RUNNING or not job.interaction_id:
        return None
    now = utcnow()
    lateness = (now - job.next_poll_at).total_seconds() if job.next_poll_at else 0.0
    if not _same_endpoint(settings, job, gateway):
        return Polled(None, lateness)
    if throttle(settings, job.id, JobStatus.RUNNING):
        return Polled(None, lateness)
    try:
        snapshot = gateway.get(job.interaction_id)
    except RetryableError as exc:
        _reschedule(
            settings, job, _after_refusal(settings, job, exc), error=f"temporary API problem, will poll again: {exc}"
        )
        return Polled(None, lateness)
    except PermanentError as exc:
        needs_attention(settings, job.id, JobStatus.RUNNING, f"the API refused to report on the interaction: {exc}")
        return Polled(None, lateness)
    # The time limit applies only to an interaction still running: one that has ended is recorded as it ended.
    if snapshot.status in REMOTE_RUNNING and _past_time_limit(settings, job, now):
        _time_out(settings, gateway, job)
        return Polled(snapshot.status, lateness)
    record(settings, job, snapshot, pending)
    return Polled(snapshot.status, lateness)


def _after_refusal(settings: Settings, job: Job, exc: RetryableError) -> float:
    """Seconds until a job the API refused for now is asked again: its backoff, or its Retry-After if longer."""
    honour_retry_after(settings, exc)
    return max(leases.not_before(settings, exc.retry_after), backoff_delay(settings, job.poll_count))


def _past_time_limit(settings: Settings, job: Job, now: datetime) -> bool:
    return job.submitted_at is not None and now - job.submitted_at > timedelta(minutes=settings.max_research_minutes)


def _same_endpoint(settings: Settings, job: Job, gateway: Gateway) -> bool:
    """A job is polled only through the API endpoint that created its interaction (ids are per endpoint)."""
    if job.api_endpoint is None or job.api_endpoint == gateway.endpoint:
        return True
    needs_attention(
        settings, job.id, JobStatus(job.status),
        f"its interaction lives at {job.api_endpoint}, but this runner talks to {gateway.endpoint}; "
        "it was not polled there. Point RESEARCH_GEMINI_BASE_URL at it, or `research cancel` it",
    )  # fmt: skip
    return False


def _time_out(settings: Settings, gateway: Gateway, job: Job) -> None:
    """Past the maximum research time and still running: stop paying for it, and say only what happened."""
    assert job.interaction_id is not None
    try:
        snapshot = gateway.cancel(job.interaction_id)
    except RetryableError as exc:  # not cancelled: keep it running and try again at the next poll
        _reschedule(settings, job, _after_refusal(settings, job, exc),
                    error=f"past the maximum research time; cancelling failed, will try again: {exc}")  # fmt: skip
        return
    except PermanentError:  # the API refuses to cancel what has just ended: record how it ended
        snapshot = gateway.get(job.interaction_id)
    if snapshot.status in REMOTE_TERMINAL and snapshot.status != "cancelled":
        record(settings, job, snapshot)
        return
    end_without_report(
        settings, job.id, JobStatus.RUNNING, JobStatus.TIMED_OUT,
        f"no result after {settings.max_research_minutes:g} minutes (RESEARCH_MAX_RESEARCH_MINUTES); "
        + ("the interaction was cancelled" if snapshot.status == "cancelled" else
           f"cancel requested (the API reports {snapshot.status})"),
    )  # fmt: skip


def advance(settings: Settings, gateway: Gateway, job_id: str) -> None:
    """Take whatever step a job needs next."""
    job = store.load(settings, job_id)
    if job is not None and job.status == JobStatus.QUEUED:
        start(settings, gateway, job_id)
    elif job is not None and job.status == JobStatus.RUNNING:
        poll(settings, gateway, job_id)


def record(settings: Settings, job: Job, snapshot: Snapshot, pending: list[dict[str, Any]] | None = None) -> None:
    owner = snapshot.labels.get(JOB_LABEL)
    if owner is not None and owner != job.id:
        # Another job's interaction (e.g. ids reused by another endpoint): its report must never be stored here.
        needs_attention(
            settings, job.id, JobStatus(job.status),
            f"interaction {snapshot.id} belongs to job {owner[:8]} (its {JOB_LABEL} label), not to this job; "
            "nothing of it was stored",
        )  # fmt: skip
        return
    if snapshot.status == "completed" and planning(job):
        _plan_ready(settings, job, snapshot)
    elif snapshot.status in REMOTE_TERMINAL:
        outcome.finish(settings, job, snapshot)
    elif snapshot.status in REMOTE_RUNNING:
        delay = running_poll_delay(settings, job.poll_count)
        values = _next_poll(job, delay, snapshot=snapshot)
        if pending is None:
            store.transition(settings, job.id, [JobStatus.RUNNING], **values)
        else:
            pending.append(values | {"job_id": job.id, "polls_before": job.poll_count})
    else:
        needs_attention(
            settings,
            job.id,
            JobStatus.RUNNING,
            f"the API reported status {snapshot.status!r}, which this version does not know; polling stopped",
        )


def _plan_ready(settings: Settings, job: Job, snapshot: Snapshot) -> None:
    """Collaborative planning: the interaction ended with a plan, which waits for `approve` or `revise`."""
    store.transition(
        settings, job.id, ACTIVE_STATUSES, status=JobStatus.PLAN_READY, remote_status=snapshot.status,
        plan_markdown=snapshot.text.strip(), previous_interaction_id=snapshot.id, next_poll_at=None,
        lease_until=None, poll_count=job.poll_count + 1, error=None,
        last_thought=snapshot.last_thought or job.last_thought, cost_usd=pricing.plus(
            job.cost_usd, pricing.estimate(settings.prices.get(job.agent), snapshot.usage, snapshot.searches)),
    )  # fmt: skip


def _reschedule(settings: Settings, job: Job, delay: float, *, error: str) -> None:
    store.transition(settings, job.id, [JobStatus.RUNNING], **_next_poll(job, delay, error=error))


def _next_poll(job: Job, delay: float, *, snapshot: Snapshot | None = None, error: str | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "poll_count": job.poll_count + 1,
        "next_poll_at": utcnow() + timedelta(seconds=delay),
        "lease_until": None,
        "error": error,
        "updated_at": utcnow(),
    }
    if snapshot is not None:
        values["remote_status"] = snapshot.status
        values["last_thought"] = snapshot.last_thought or job.last_thought
    return values
