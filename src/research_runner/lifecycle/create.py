"""Creating a job's interaction, at most once: taken under a lease, sent, and recorded with its turn."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from research_runner import attachments, leases, store
from research_runner.constants import JOB_LABEL
from research_runner.exceptions import CreateOutcomeUnknown, PermanentError, RetryableError
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
from research_runner.models import Job, JobTurn
from research_runner.settings import Settings
from research_runner.status import JobStatus, utcnow

if TYPE_CHECKING:  # the SDK is imported only where a gateway is built
    from research_runner.gateway import Gateway

log = logging.getLogger("research_runner.lifecycle")


def webhook_config(settings: Settings, job_id: str) -> dict[str, Any] | None:
    """A create's `webhook_config` (SDK WebhookConfig): where the API pushes the end, and whose job it is."""
    if not settings.webhooks_on:
        return None
    config: dict[str, Any] = {"user_metadata": {JOB_LABEL: job_id}}
    if settings.webhook_dynamic:
        config["uris"] = [settings.webhook_url]
    return config


def start(settings: Settings, gateway: Gateway, job_id: str) -> None:
    """Create the interaction for a queued job (or the next turn of its thread), at most once."""
    start_job(settings, gateway, store.load(settings, job_id))


def start_job(settings: Settings, gateway: Gateway, job: Job | None) -> None:
    """`start` for a job loaded a moment ago; taking it for the create checks its status again, so a stale copy
    can never create twice."""
    if job is None or job.status != JobStatus.QUEUED:
        return  # checked before any budget is spent on it
    if _over_budget(settings, job) or throttle(settings, job.id, JobStatus.QUEUED):
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
        honour_retry_after(settings, exc)
        delay = max(exc.retry_after or 0.0, backoff_delay(settings, taken.poll_count))
        _requeue(settings, taken, f"create not accepted yet, will try again: {exc}", delay)
    except CreateOutcomeUnknown as exc:
        needs_attention(
            settings, taken.id, JobStatus.SUBMITTING,
            f"the create request may have started an interaction ({exc}); no second one was started "
            "automatically. Run `research retry JOB` to start anew.",
        )  # fmt: skip
    except PermanentError as exc:
        end_without_report(settings, taken.id, JobStatus.SUBMITTING, JobStatus.FAILED, f"create refused: {exc}")
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


def start_many(settings: Settings, gateway: Gateway, job_ids: list[str], mapper: Mapper = map) -> list[Job]:
    """Create the interactions of several queued jobs, taken in one statement; a failure is raised once every
    job has had its turn. Returns the jobs now running, as stored (the others' rows say what became of them)."""
    running: list[Job] = []
    if settings.monthly_budget_usd is not None or settings.api_requests_per_minute:
        # Each job checks the budget and takes its turn of the shared API budget before it is taken.
        found = store.load_many(settings, job_ids)
        _, failures = each_job(
            settings, mapper, found, lambda job: start_job(settings, gateway, job), lambda job: str(job.id)
        )
    else:  # taken together (only those still queued, so nothing is loaded first) and recorded together
        taken = leases.take_many_for_create(settings, job_ids, _create_lease(settings))
        ids, failures = each_job(
            settings, mapper, taken, lambda job: _create(settings, gateway, job), lambda job: str(job.id)
        )
        running = _started(settings, gateway, [(job, id_) for job, id_ in zip(taken, ids, strict=True) if id_])
    if failures:
        raise failures[0]  # the failed jobs keep their lease and are handed out again once it lapses
    return running
