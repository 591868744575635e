"""A create is sent at most once: only failures that certainly did nothing are retried automatically."""

from __future__ import annotations

from typing import Any

import pytest

from research_runner import lifecycle, store
from research_runner.gateway import Gateway
from research_runner.status import JobStatus

from conftest import create_job, settings_from

QUESTION = "How are offshore wind farms maintained? [[emulator duration=0.3]]"


def step(settings: Any, job_id: str) -> Any:
    lifecycle.advance(settings, Gateway(settings), job_id)
    return store.find(settings, job_id)


@pytest.mark.parametrize("fault", ["lost", "lost_reset", "lost_500", "500", "503"])
def test_an_ambiguous_create_is_never_repeated(
    fault: str, runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    settings = settings_from(runner_env, monkeypatch)
    emulator.set_faults({"create": {fault: 1.0}})
    job = create_job(settings, QUESTION, settings.agent)
    job = step(settings, job.id)
    assert job.status == JobStatus.NEEDS_ATTENTION and job.interaction_id is None
    assert "may have started an interaction" in str(job.error) and "research retry" in str(job.error)
    assert step(settings, job.id).status == JobStatus.NEEDS_ATTENTION  # nothing further happens on its own
    created = emulator.stats()["interactions_created"]
    assert created == (1 if fault.startswith("lost") else 0)
    assert sum(emulator.stats()["requests"]["create"].values()) == 1


def test_a_rate_limited_create_is_retried_later(
    runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    settings = settings_from(runner_env, monkeypatch)
    emulator.set_faults({"create": {"429": 1.0}, "retry_after": 2})
    job = step(settings, create_job(settings, QUESTION, settings.agent).id)
    assert job.status == JobStatus.QUEUED and "create not accepted yet" in str(job.error)
    assert job.next_poll_at is not None and (job.next_poll_at - job.updated_at).total_seconds() > 1.99  # Retry-After: 2
    emulator.set_faults({})
    store.transition(settings, job.id, [JobStatus.QUEUED], next_poll_at=job.updated_at)
    job = step(settings, job.id)
    assert job.status == JobStatus.RUNNING and job.interaction_id
    assert emulator.stats()["interactions_created"] == 1


def test_a_refused_connection_is_retried_later(runner_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from({**runner_env, "RESEARCH_GEMINI_BASE_URL": "http://127.0.0.1:9"}, monkeypatch)
    job = step(settings, create_job(settings, QUESTION, settings.agent).id)
    assert job.status == JobStatus.QUEUED and "Connection refused" in str(job.error)


def test_retry_starts_a_new_job_and_keeps_the_old_one(
    runner_env: dict[str, str], redis_url: str, monkeypatch: pytest.MonkeyPatch, emulator: Any
) -> None:
    from click.testing import CliRunner

    from research_runner.cli import cli

    env = {**runner_env, "RESEARCH_BROKER_URL": redis_url}
    settings = settings_from(env, monkeypatch)
    emulator.set_faults({"create": {"lost": 1.0}})
    old = step(settings, create_job(settings, QUESTION, settings.agent).id)
    result = CliRunner().invoke(cli, ["retry", old.id[:8]], env=env)
    assert result.exit_code == 0, result.output
    new_short = result.stdout.split()[2]
    assert result.stdout == f"Submitted job {new_short} (retry of {old.short_id})\n"
    new = store.find(settings, new_short)
    assert (new.status, new.retry_of, new.question) == (JobStatus.QUEUED, old.id, old.question)
    assert store.find(settings, old.id).status == JobStatus.NEEDS_ATTENTION
