"""Idempotency keys, the maximum research time, and the API budget shared by all workers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from research_runner import leases, lifecycle, ratelimit, store
from research_runner.cli import cli
from research_runner.gateway import Gateway
from research_runner.status import JobStatus

from conftest import create_job, settings_from

QUESTION = "How are offshore wind farms maintained? [[emulator duration=0.3]]"


def test_the_same_idempotency_key_gives_one_job(
    runner_env: dict[str, str], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**runner_env, "RESEARCH_BROKER_URL": redis_url}
    first = CliRunner().invoke(cli, ["submit", "--json", "--idempotency-key", "weekly-42", QUESTION], env=env)
    second = CliRunner().invoke(cli, ["submit", "--idempotency-key", "weekly-42", QUESTION], env=env)
    job = json.loads(first.stdout)
    assert (first.exit_code, second.exit_code) == (0, 0)
    assert second.stdout == f"Job {job['id'][:8]} was already submitted with this idempotency key (queued)\n"
    settings = settings_from(env, monkeypatch)
    assert [j.id for j in store.list_jobs(settings)] == [job["id"]]
    assert job["idempotency_key"] == "weekly-42"


def test_a_job_past_the_maximum_research_time_is_cancelled_and_timed_out(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    settings = settings_from({**runner_env, "RESEARCH_MAX_RESEARCH_MINUTES": "0.001"}, monkeypatch)
    job = create_job(settings, "Never ends [[emulator outcome=stuck]]", settings.agent)
    gateway = Gateway(settings)
    lifecycle.advance(settings, gateway, job.id)
    running = store.find(settings, job.id)
    assert running.status == JobStatus.RUNNING
    assert running.submitted_at is not None
    store.transition(settings, job.id, [JobStatus.RUNNING], submitted_at=running.submitted_at - timedelta(seconds=1))
    lifecycle.advance(settings, gateway, job.id)
    ended = store.find(settings, job.id)
    assert ended.status == JobStatus.TIMED_OUT and ended.finished_at is not None
    assert ended.error == (
        "no result after 0.001 minutes (RESEARCH_MAX_RESEARCH_MINUTES); the interaction was cancelled"
    )
    assert emulator.stats()["status_counts"] == {"cancelled": 1}


def test_a_refused_cancel_past_the_time_limit_keeps_the_retry_after(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    env = {**runner_env, "RESEARCH_MAX_RESEARCH_MINUTES": "0.001", "RESEARCH_POLL_MAX": "1"}
    settings = settings_from(env, monkeypatch)
    job = create_job(settings, "Never ends [[emulator outcome=stuck]]", settings.agent)
    gateway = Gateway(settings)
    lifecycle.advance(settings, gateway, job.id)
    started = store.find(settings, job.id).submitted_at
    assert started is not None
    store.transition(settings, job.id, [JobStatus.RUNNING], submitted_at=started - timedelta(seconds=1))
    emulator.set_faults({"cancel": {"429": 1.0}, "retry_after": 3})

    lifecycle.advance(settings, gateway, job.id)  # past the limit: the cancel is refused for now

    held = store.find(settings, job.id)
    assert held.status == JobStatus.RUNNING and "cancelling failed, will try again" in str(held.error)
    assert held.next_poll_at is not None and held.updated_at is not None
    waits = (held.next_poll_at - held.updated_at).total_seconds()
    assert waits - leases.poll_head_start(settings) > 2.99  # not handed out again before Retry-After


def test_the_shared_budget_grants_at_most_the_limit_per_minute(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from({**runner_env, "RESEARCH_API_REQUESTS_PER_MINUTE": "3"}, monkeypatch)
    minute = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    waits = [ratelimit.acquire(settings, minute + timedelta(seconds=s)) for s in (1, 2, 3, 4, 50)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == [56.0, 10.0]  # until the next minute starts
    assert ratelimit.acquire(settings, minute + timedelta(seconds=61)) == 0.0


def test_a_429_pauses_every_worker_until_retry_after(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from({**runner_env, "RESEARCH_API_REQUESTS_PER_MINUTE": "100"}, monkeypatch)
    now = datetime(2026, 11, 26, 12, 0, 10, tzinfo=UTC)
    ratelimit.block(settings, 30, now)
    ratelimit.block(settings, 5, now)  # a shorter pause never cuts a longer one short
    assert ratelimit.acquire(settings, now + timedelta(seconds=1)) == 29.0
    assert ratelimit.acquire(settings, now + timedelta(seconds=31)) == 0.0


def test_a_poll_held_back_by_the_budget_is_not_handed_out_before_the_pause_ends(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    env = {**runner_env, "RESEARCH_API_REQUESTS_PER_MINUTE": "100", "RESEARCH_DISPATCH_INTERVAL": "2"}
    settings = settings_from(env, monkeypatch)
    gateway = Gateway(settings)
    job = create_job(settings, "Held back [[emulator duration=600]]", settings.agent)
    lifecycle.advance(settings, gateway, job.id)  # create
    ratelimit.block(settings, 30)  # as a 429's Retry-After does, for every worker
    gets = emulator.stats()["requests"]["get"]

    lifecycle.advance(settings, gateway, job.id)  # the poll: held back without asking the API

    held = store.find(settings, job.id)
    assert held.status == JobStatus.RUNNING and emulator.stats()["requests"]["get"] == gets
    assert held.next_poll_at is not None and held.updated_at is not None
    waits = (held.next_poll_at - held.updated_at).total_seconds()
    assert waits - leases.poll_head_start(settings) > 29  # handed out half a tick early, it still finds the pause over


def test_jobs_over_the_budget_wait_without_calling_the_api(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    settings = settings_from({**runner_env, "RESEARCH_API_REQUESTS_PER_MINUTE": "2"}, monkeypatch)
    gateway = Gateway(settings)
    created = [create_job(settings, f"Q{i} [[emulator duration=30]]", settings.agent) for i in range(3)]
    for job in created:
        lifecycle.advance(settings, gateway, job.id)
    statuses = [store.find(settings, job.id).status for job in created]
    assert statuses.count(JobStatus.RUNNING) == 2 and statuses.count(JobStatus.QUEUED) == 1
    assert emulator.stats()["interactions_created"] == 2
    held = next(store.find(settings, j.id) for j in created if store.find(settings, j.id).status == JobStatus.QUEUED)
    assert held.updated_at is not None
    assert held.next_poll_at is not None and held.next_poll_at > held.updated_at and held.poll_count == 0


def test_an_unknown_status_stops_polling_until_the_user_cancels(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    settings = settings_from(runner_env, monkeypatch)
    job = create_job(settings, "Reports a newer status [[emulator outcome=unknown_status duration=0]]", settings.agent)
    gateway = Gateway(settings)
    lifecycle.advance(settings, gateway, job.id)  # create
    lifecycle.advance(settings, gateway, job.id)  # poll: the API says "paused"
    waiting = store.find(settings, job.id)
    assert waiting.status == JobStatus.NEEDS_ATTENTION and waiting.interaction_id
    assert waiting.error == "the API reported status 'paused', which this version does not know; polling stopped"
    gets = emulator.stats()["requests"]["get"]
    lifecycle.advance(settings, gateway, job.id)
    assert leases.claim_due(settings, datetime.now(UTC) + timedelta(days=1)) == []  # never handed out again
    assert emulator.stats()["requests"]["get"] == gets

    cancelled = CliRunner().invoke(cli, ["cancel", job.id[:8]], env=runner_env)
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.startswith(f"Job {job.id[:8]} cancelled")
    ended = store.find(settings, job.id)
    assert ended.status == JobStatus.CANCELLED and ended.remote_status == "cancelled"
    assert emulator.describe(waiting.interaction_id)["status"] == "cancelled"
    again = CliRunner().invoke(cli, ["cancel", job.id[:8]], env=runner_env)
    assert again.exit_code == 1
    assert again.stderr == f"Error: job {job.id[:8]} has already ended (cancelled); there is nothing to cancel\n"


def test_cancel_dismisses_a_waiting_job_whose_interaction_the_api_forgot(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    settings = settings_from(runner_env, monkeypatch)
    job = create_job(settings, QUESTION, settings.agent)
    assert store.transition(
        settings,
        job.id,
        [JobStatus.QUEUED],
        status=JobStatus.NEEDS_ATTENTION,
        interaction_id="v1_forgotten",
        error="the API refused to report on the interaction",
    )
    result = CliRunner().invoke(cli, ["cancel", job.id], env=runner_env)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Job {job.id[:8]} cancelled: cancelled by the user; the API no longer reports on interaction v1_forgotten\n"
    )
    assert store.find(settings, job.id).status == JobStatus.CANCELLED
