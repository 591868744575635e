"""What the create and poll steps share: their delays, the shared API budget, stepping several jobs at once, and
the transitions that stop a job's steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from research_runner import leases, ratelimit, store
from research_runner.exceptions import RetryableError
from research_runner.models import Job
from research_runner.settings import Settings
from research_runner.status import JobStatus, utcnow

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


def throttle(settings: Settings, job_id: str, status: JobStatus) -> bool:
    """Hold the step back if the shared API budget is spent; True if it was held back."""
    if not settings.api_requests_per_minute:
        return False
    wait = ratelimit.acquire(settings)
    if wait > 0:
        held = leases.not_before(settings, wait) if status == JobStatus.RUNNING else wait  # polls go out early
        store.transition(settings, job_id, [status], next_poll_at=utcnow() + timedelta(seconds=held), lease_until=None)
    return wait > 0


def honour_retry_after(settings: Settings, exc: RetryableError) -> None:
    if settings.api_requests_per_minute and exc.retry_after:
        ratelimit.block(settings, exc.retry_after)  # every worker waits, not just this job


# Runs a step over several jobs, e.g. a thread pool's map, so their API calls overlap.
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


def each_job(
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


def planning(job: Job) -> bool:
    return bool(job.agent_config and json.loads(job.agent_config).get("collaborative_planning"))


def needs_attention(settings: Settings, job_id: str, from_status: JobStatus, error: str) -> None:
    store.transition(
        settings,
        job_id,
        [from_status],
        status=JobStatus.NEEDS_ATTENTION,
        lease_until=None,
        next_poll_at=None,
        error=error,
    )


def end_without_report(settings: Settings, job_id: str, from_status: JobStatus, status: JobStatus, error: str) -> None:
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
