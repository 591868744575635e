"""The steps a worker takes for a job: create its interaction (at most once), poll it with backoff, and record
what the API says, down to the terminal transition (outcome.finish) or a plan for the user.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from research_runner import attachments, leases, outcome, pricing, ratelimit, store
from research_runner.constants import JOB_LABEL
from research_runner.exceptions import (
    CreateOutcomeUnknown,
    PermanentError,
    RetryableError,
)
from research_runner.models import Job, JobTurn
from research_runner.settings import Settings
from research_runner.snapshot import Snapshot
from research_runner.status import ACTIVE_STATUSES, REMOTE_RUNNING, REMOTE_TERMINAL, JobStatus, utcnow

if TYPE_CHECKING:  # the SDK is imported only where a gateway is built
    from research_runner.gateway import Gateway

log = logging.getLogger("research_runner.lifecycle")
_rng = random.Random()


def backoff_delay(settings: Settings, polls_done: int) -> float:
    """Seconds until the next poll: exponential up to the maximum, with jitter so jobs do not bunch up.

    The jitter never takes a wait past the maximum: RESEARCH_POLL_MAX is the longest a finished research waits
    to be noticed (with +10% on top, a 600 s research was noticed up to 66 s late, issue 16)."""
    base = min(settings.poll_initial * settings.poll_multiplier ** min(polls_done, 64), settings.poll_max)
    return min(base * _rng.uniform(1 - settings.poll_jitter, 1 + settings.poll_jitter), settings.poll_max)


def running_poll_delay(settings: Settings, polls_done: int) -> float:
    """Seconds until a running research is polled again; with webhooks on, polls are only the safety net."""
    if settings.webhooks_on:
        return settings.webhook_poll_interval * _rng.uniform(1 - settings.poll_jitter, 1 + settings.poll_jitter)
    return backoff_delay(settings, polls_done)


def webhook_config(settings: Settings, job_id: str) -> dict[str, Any] | None:
    """A create's `webhook_config` (SDK WebhookConfig): where the API pushes the end, and whose job it is."""
    if not settings.webhooks_on:
        return None
    config: dict[str, Any] = {"user_metadata": {JOB_LABEL: job_id}}
    if settings.webhook_dynamic:
        config["uris"] = [settings.webhook_url]
    return config


def _throttle(settings: Settings, job_id: str, status: JobStatus) -> bool:
    """Hold the step back if the shared API budget is spent; True if it was held back."""
    if not settings.api_requests_per_minute:
        return False
    wait = ratelimit.acquire(settings)
    if wait > 0:
        store.transition(settings, job_id, [status], next_poll_at=utcnow() + timedelta(seconds=wait), lease_until=None)
    return wait > 0


def _honour_retry_after(settings: Settings, exc: RetryableError) -> None:
    if settings.api_requests_per_minute and exc.retry_after:
        ratelimit.block(settings, exc.retry_after)  # every worker waits, not just this job


def start(settings: Settings, gateway: Gateway, job_id: str) -> None:
    """Create the interaction for a queued job (or the next turn of its thread), at most once."""
    start_job(settings, gateway, store.load(settings, job_id))


def start_job(settings: Settings, gateway: Gateway, job: Job | None) -> None:
    """`start` for a job loaded a moment ago; taking it for the create checks its status again, so a stale copy
    can never create twice."""
    if job is None or job.status != JobStatus.QUEUED:
        return  # checked before any budget is spent on it
    if _over_budget(settings, job) or _throttle(settings, job.id, JobStatus.QUEUED):
        return
    taken = leases.take_for_create(settings, job.id, _create_lease(settings))
    interaction_id = None if taken is None else _create(settings, gateway, taken)
    if taken is not None and interaction_id is not None:
        _started(settings, gateway, [(taken, interaction_id)])


def _create_lease(settings: Settings) -> datetime:
    # Long enough for the create's connect and read timeouts, so the reaper never takes a create still running.
    return utcnow() + timedelta(seconds=settings.lease_seconds + 2 * settings.request_timeout)


def _create(settings: Settings, gateway: Gateway, taken: Job) -> str | None:
    """Send the create of a job taken for it; the interaction id, or None (the outcome is recorded)."""
    try:
        return gateway.create(
            _input(settings, taken), taken.agent, taken.id,
            agent_config=json.loads(taken.agent_config) if taken.agent_config else None,
            previous_interaction_id=taken.previous_interaction_id, webhook_config=webhook_config(settings, taken.id),
        )  # fmt: skip
    except RetryableError as exc:
        _honour_retry_after(settings, exc)
        delay = max(exc.retry_after or 0.0, backoff_delay(settings, taken.poll_count))
        _requeue(settings, taken, f"create not accepted yet, will try again: {exc}", delay)
    except CreateOutcomeUnknown as exc:
        _needs_attention(
            settings, taken.id, JobStatus.SUBMITTING,
            f"the create request may have started an interaction ({exc}); no second one was started "
            "automatically. Run `research retry JOB` to start anew.",
        )  # fmt: skip
    except PermanentError as exc:
        _end_without_report(settings, taken.id, JobStatus.SUBMITTING, JobStatus.FAILED, f"create refused: {exc}")
    return None


def _input(settings: Settings, job: Job) -> str | list[dict[str, Any]]:
    """The create's input: a continuation's text, or the question with the job's files."""
    if job.next_input is not None:
        return job.next_input
    files = store.files_of(settings, job.id) if job.files else []
    return attachments.input_of(job.question, [attachments.Attachment(f.name, f.mime_type, f.data) for f in files])


def _started(settings: Settings, gateway: Gateway, created: list[tuple[Job, str]]) -> list[Job]:
    """Record the interactions just created, with their turns, in one transaction; returns the jobs now running."""
    now = utcnow()
    values = {
        job.id: {"status": JobStatus.RUNNING, "interaction_id": interaction_id, "api_endpoint": gateway.endpoint,
                 "submitted_at": now, "lease_until": None, "error": None,
                 "next_poll_at": now + timedelta(seconds=running_poll_delay(settings, 0))}
        for job, interaction_id in created
    }  # fmt: skip
    turns = [JobTurn(job_id=job.id, kind=turn_kind(job), input=job.next_input, interaction_id=interaction_id,
                     api_endpoint=gateway.endpoint) for job, interaction_id in created]  # fmt: skip
    moved = leases.mark_running(settings, values, turns)
    for job, interaction_id in created:
        if job.id not in moved:
            _keep_late_interaction(settings, job.id, interaction_id)
        else:  # the caller's copy says what the row now says, so it need not be read again
            job.status, job.interaction_id = JobStatus.RUNNING, interaction_id
    return [job for job, _ in created if job.id in moved]


def turn_kind(job: Job) -> str:
    """What a create of this job is in its thread: research, plan, revise, approve or follow_up."""
    if job.previous_interaction_id is None:
        return "plan" if planning(job) else "research"
    if job.next_input is None:
        return "follow_up"
    return "revise" if planning(job) else "approve"


def planning(job: Job) -> bool:
    return bool(job.agent_config and json.loads(job.agent_config).get("collaborative_planning"))


def _over_budget(settings: Settings, job: Job) -> bool:
    """Hold a queued job back while this month's estimated spend has reached the budget; running jobs go on."""
    budget = settings.monthly_budget_usd
    if budget is None:
        return False
    spent = store.spent_this_month(settings, utcnow())
    if spent < budget:
        return False
    store.transition(
        settings, job.id, [JobStatus.QUEUED], lease_until=None,
        # As often as a running job is polled at the slowest: a raised budget is seen within that time.
        next_poll_at=utcnow() + timedelta(seconds=settings.poll_max),
        error=f"waiting for budget: this month's estimated spend ${spent:.2f} has reached "
        f"RESEARCH_MONTHLY_BUDGET_USD (${budget:.2f}); it starts when the budget is raised or the month turns",
    )  # fmt: skip
    return True


@dataclass(frozen=True)
class Polled:
    """One poll's outcome, for logs and benchmarks: what the API said, and how late the poll ran."""

    remote_status: str | None  # None when the API could not be asked
    lateness: float


def _keep_late_interaction(settings: Settings, job_id: str, interaction_id: str) -> None:
    """The job was given up on while its create was still running: record the interaction it did start."""
    log.error("job %s: create returned interaction %s after the job was given up on", job_id[:8], interaction_id)
    store.transition(
        settings,
        job_id,
        [JobStatus.NEEDS_ATTENTION],
        interaction_id=interaction_id,
        error=f"the create finished late and started interaction {interaction_id}; polling did not start. "
        "Run `research retry JOB` only if you want a second one.",
    )


def poll(settings: Settings, gateway: Gateway, job_id: str) -> Polled | None:
    """Ask the API once about a running job and record what it says."""
    job = store.load(settings, job_id)
    return None if job is None else poll_job(settings, gateway, job)


# Runs a step over several jobs, e.g. a thread pool's map, so their API calls overlap.
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


def _job_id(job: Job) -> str:
    return str(job.id)


def _each(
    settings: Settings, mapper: Mapper, items: list[Any], step: Callable[[Any], Any], job_id_of: Callable[[Any], str]
) -> tuple[list[Any], list[Exception]]:
    """Run `step` on every item; a failure is logged, noted on the job's row (its status unchanged: the lease
    lapses and the step runs again), returned (its result is None), and costs the others nothing."""
    failures: list[Exception] = []

    def one(item: Any) -> Any:
        try:
            return step(item)
        except Exception as exc:
            log.exception("job %s: step failed", job_id_of(item)[:8])
            failures.append(exc)
            with contextlib.suppress(Exception):  # the database may be what failed
                store.note_error(settings, job_id_of(item), f"a step failed and will be tried again: {exc!r}"[:500])
            return None

    return list(mapper(one, items)), failures


def start_many(settings: Settings, gateway: Gateway, job_ids: list[str], mapper: Mapper = map) -> list[Job]:
    """Create the interactions of several queued jobs, taken in one statement; a failure is raised once every
    job has had its turn. Returns the jobs now running, as stored (the others' rows say what became of them)."""
    running: list[Job] = []
    if settings.monthly_budget_usd is not None or settings.api_requests_per_minute:
        # Each job checks the budget and takes its turn of the shared API budget before it is taken.
        found = store.load_many(settings, job_ids)
        _, failures = _each(
            settings, mapper, found, lambda job: start_job(settings, gateway, job), lambda job: str(job.id)
        )
    else:  # taken together (only those still queued, so nothing is loaded first) and recorded together
        taken = leases.take_many_for_create(settings, job_ids, _create_lease(settings))
        ids, failures = _each(
            settings, mapper, taken, lambda job: _create(settings, gateway, job), lambda job: str(job.id)
        )
        running = _started(settings, gateway, [(job, id_) for job, id_ in zip(taken, ids, strict=True) if id_])
    if failures:
        raise failures[0]  # the failed jobs keep their lease and are handed out again once it lapses
    return running


def poll_many(
    settings: Settings, gateway: Gateway, job_ids: list[str], mapper: Mapper = map
) -> dict[str, Polled | None]:
    """Poll several jobs: one query loads them, then each is asked and recorded on its own (None: not polled)."""
    found = store.load_many(settings, job_ids)
    pending: list[dict[str, Any]] = []  # jobs still running: rescheduled together in one round trip
    results, failures = _each(
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
    if _throttle(settings, job.id, JobStatus.RUNNING):
        return Polled(None, lateness)
    try:
        snapshot = gateway.get(job.interaction_id)
    except RetryableError as exc:
        _honour_retry_after(settings, exc)
        delay = max(exc.retry_after or 0.0, backoff_delay(settings, job.poll_count))
        _reschedule(settings, job, delay, error=f"temporary API problem, will poll again: {exc}")
        return Polled(None, lateness)
    except PermanentError as exc:
        _needs_attention(settings, job.id, JobStatus.RUNNING, f"the API refused to report on the interaction: {exc}")
        return Polled(None, lateness)
    # The time limit applies only to an interaction still running: one that has ended is recorded as it ended.
    if snapshot.status in REMOTE_RUNNING and _past_time_limit(settings, job, now):
        _time_out(settings, gateway, job)
        return Polled(snapshot.status, lateness)
    record(settings, job, snapshot, pending)
    return Polled(snapshot.status, lateness)


def _past_time_limit(settings: Settings, job: Job, now: datetime) -> bool:
    return job.submitted_at is not None and now - job.submitted_at > timedelta(minutes=settings.max_research_minutes)


def _same_endpoint(settings: Settings, job: Job, gateway: Gateway) -> bool:
    """A job is polled only through the API endpoint that created its interaction (ids are per endpoint)."""
    if job.api_endpoint is None or job.api_endpoint == gateway.endpoint:
        return True
    _needs_attention(
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
        _reschedule(settings, job, backoff_delay(settings, job.poll_count),
                    error=f"past the maximum research time; cancelling failed, will try again: {exc}")  # fmt: skip
        return
    except PermanentError:  # the API refuses to cancel what has just ended: record how it ended
        snapshot = gateway.get(job.interaction_id)
    if snapshot.status in REMOTE_TERMINAL and snapshot.status != "cancelled":
        record(settings, job, snapshot)
        return
    _end_without_report(
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
        _needs_attention(
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
        _needs_attention(
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


def _requeue(settings: Settings, job: Job, error: str, delay: float) -> None:
    # poll_count counts every API call for the job, so repeated refused creates back off too.
    store.transition(
        settings,
        job.id,
        [JobStatus.SUBMITTING],
        status=JobStatus.QUEUED,
        lease_until=None,
        error=error,
        next_poll_at=utcnow() + timedelta(seconds=delay),
        poll_count=job.poll_count + 1,
    )


def _needs_attention(settings: Settings, job_id: str, from_status: JobStatus, error: str) -> None:
    store.transition(
        settings,
        job_id,
        [from_status],
        status=JobStatus.NEEDS_ATTENTION,
        lease_until=None,
        next_poll_at=None,
        error=error,
    )


def _end_without_report(settings: Settings, job_id: str, from_status: JobStatus, status: JobStatus, error: str) -> None:
    store.transition(
        settings,
        job_id,
        [from_status],
        status=status,
        finished_at=utcnow(),
        lease_until=None,
        next_poll_at=None,
        error=error,
    )
