"""The webhook receiver over real HTTP: verification, one record per webhook-id, polls made due, JWT keys."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlmodel import select
from webhook_support import SECRET, RunningReceiver, event, post, running_job, signed_headers

from research_runner import db, store, webhooks
from research_runner.models import WebhookDelivery
from research_runner.settings import Settings, load_settings
from research_runner.status import utcnow
from research_runner.webhook_record import BUSY, DUPLICATE, Delivery, record_batch, target_of

from conftest import wait_for


@pytest.fixture
def settings(tmp_path: Path, emulator: Any) -> Settings:
    settings = load_settings(data_dir=str(tmp_path), webhook_jwks_url=emulator.url + "/_emulator/jwks.json")
    db.ensure_schema(settings)
    webhooks.save_secret(settings, "hook-1", "http://127.0.0.1/webhooks", SECRET)
    return settings


@pytest.fixture
def receiver(settings: Settings) -> Iterator[RunningReceiver]:
    running = RunningReceiver(settings)
    yield running
    running.stop()


def deliveries(settings: Settings) -> list[WebhookDelivery]:
    with db.session(settings) as session:
        return list(session.scalars(select(WebhookDelivery)))


def is_due(settings: Settings, job_id: str) -> bool:
    job = store.load(settings, job_id)
    assert job is not None and job.next_poll_at is not None
    return job.next_poll_at <= utcnow()


def test_a_valid_hmac_delivery_makes_the_poll_due(settings: Settings, receiver: RunningReceiver) -> None:
    job = running_job(settings, "v1_abc")
    body = event("v1_abc", job.id)
    status, answer = post(receiver.url, body, signed_headers(body, "msg_1"))
    assert (status, answer) == (200, {"outcome": "due"})
    assert is_due(settings, job.id)
    assert [(d.webhook_id, d.job_id, d.outcome) for d in deliveries(settings)] == [("msg_1", job.id, "due")]


def test_the_interaction_id_alone_finds_the_job(settings: Settings, receiver: RunningReceiver) -> None:
    job = running_job(settings, "v1_only_id")
    body = event("v1_only_id")
    assert post(receiver.url, body, signed_headers(body, "msg_2"))[0] == 200
    assert is_due(settings, job.id)


@pytest.mark.parametrize(
    ("spoil", "status"),
    [
        ("bad_signature", 401),
        ("missing_signature", 401),
        ("other_secret", 401),
        ("stale_timestamp", 401),
        ("future_timestamp", 401),
    ],
)
def test_unverified_deliveries_are_refused_and_logged_without_the_body(
    settings: Settings, receiver: RunningReceiver, caplog: pytest.LogCaptureFixture, spoil: str, status: int
) -> None:
    job = running_job(settings, "v1_secret_question")
    body = event("v1_secret_question", job.id)
    headers = signed_headers(body, "msg_bad")
    if spoil == "bad_signature":
        headers["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    elif spoil == "missing_signature":
        del headers["webhook-signature"]
    elif spoil == "other_secret":
        headers = signed_headers(body, "msg_bad", secret="whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==")
    elif spoil in ("stale_timestamp", "future_timestamp"):
        headers = signed_headers(body, "msg_bad", age=600 if spoil == "stale_timestamp" else -600)
    with caplog.at_level(logging.WARNING, logger="research_runner.webhooks"):
        assert post(receiver.url, body, headers)[0] == status
    lines = [r.getMessage() for r in caplog.records if r.name == "research_runner.webhooks"]
    assert len(lines) == 1 and "rejected (401)" in lines[0]
    assert "v1_secret_question" not in lines[0] and SECRET not in lines[0]
    assert deliveries(settings) == [] and not is_due(settings, job.id)


def test_a_body_over_the_limit_gets_413_unread(tmp_path: Path, emulator: Any) -> None:
    settings = load_settings(data_dir=str(tmp_path), webhook_max_body=1000)
    db.ensure_schema(settings)
    webhooks.save_secret(settings, "hook-1", "http://127.0.0.1/webhooks", SECRET)
    running = RunningReceiver(settings)
    try:
        body = b'{"pad": "' + b"x" * 2000 + b'"}'
        assert post(running.url, body, signed_headers(body, "msg_big"))[0] == 413
        small = event("v1_small")
        assert post(running.url, small, signed_headers(small, "msg_small"))[0] == 200
    finally:
        running.stop()


def test_a_duplicate_is_recorded_once_and_does_not_poll_again(settings: Settings, receiver: RunningReceiver) -> None:
    job = running_job(settings, "v1_dup")
    body = event("v1_dup", job.id)
    assert post(receiver.url, body, signed_headers(body, "msg_dup"))[1] == {"outcome": "due"}
    later = utcnow() + timedelta(hours=1)
    store.transition(settings, job.id, ["running"], next_poll_at=later)  # as if polled since
    assert post(receiver.url, body, signed_headers(body, "msg_dup")) == (200, {"outcome": "duplicate"})
    assert len(deliveries(settings)) == 1 and not is_due(settings, job.id)


@pytest.mark.parametrize("case", ["unknown", "ended"])
def test_unknown_interactions_and_ended_jobs_are_acknowledged_and_ignored(
    settings: Settings, receiver: RunningReceiver, case: str
) -> None:
    if case == "ended":
        job = running_job(settings, "v1_done")
        store.transition(settings, job.id, ["running"], status="completed", next_poll_at=None)
    body = event("v1_unknown" if case == "unknown" else "v1_done")
    assert post(receiver.url, body, signed_headers(body, f"msg_{case}")) == (200, {"outcome": case})


def test_a_job_with_a_step_in_flight_is_deferred_with_503(settings: Settings, receiver: RunningReceiver) -> None:
    job = running_job(settings, "v1_leased", leased=True)
    body = event("v1_leased", job.id)
    status, _ = post(receiver.url, body, signed_headers(body, "msg_leased"))
    assert status == 503
    assert deliveries(settings) == []  # not recorded, so the sender's retry is processed
    store.transition(settings, job.id, ["running"], lease_until=None)
    assert post(receiver.url, body, signed_headers(body, "msg_leased"))[1] == {"outcome": "due"}


def test_jwt_deliveries_from_the_emulator_and_a_rotated_key(
    settings: Settings, receiver: RunningReceiver, emulator: Any
) -> None:
    client = emulator.client()

    def research(job_id: str) -> str:
        created = client.interactions.create(
            agent="deep-research-preview-04-2026", input="[[emulator duration=0.3]] q", background=True,
            webhook_config={"uris": [receiver.url], "user_metadata": {"research_runner_job": job_id}},
        )  # fmt: skip
        return str(created.id)

    first = running_job(settings, "")
    interaction = research(first.id)
    store.transition(settings, first.id, ["running"], interaction_id=interaction)
    wait_for(lambda: is_due(settings, first.id), 15, "the first JWT delivery")
    assert receiver.receiver.jwks is not None and receiver.receiver.jwks.fetches == 1
    emulator._admin("POST", "/_emulator/jwks/rotate")
    second = running_job(settings, "")
    store.transition(settings, second.id, ["running"], interaction_id=research(second.id))
    wait_for(lambda: is_due(settings, second.id), 15, "the delivery signed with the new key")
    assert receiver.receiver.jwks.fetches == 2  # the unknown key id fetched the key set again
    assert {d.outcome for d in deliveries(settings)} == {"due"}


def test_doctor_checks_the_receiver_and_a_signed_ping_end_to_end(
    settings: Settings, receiver: RunningReceiver, emulator: Any
) -> None:
    from research_runner.webhook_doctor import webhook_checks

    client = emulator.client()
    hook = client.webhooks.create(uri=receiver.url, subscribed_events=["interaction.completed"])
    webhooks.forget_secrets(settings, "hook-1")
    webhooks.save_secret(settings, str(hook.id), receiver.url, str(hook.new_signing_secret))
    api = settings.model_copy(update={"webhook_url": receiver.url, "gemini_base_url": emulator.url,
                                      "api_key": SecretStr("test-key")})  # fmt: skip
    checks = list(webhook_checks(api))
    assert [(c.name, c.state) for c in checks] == [
        ("webhook receiver", "ok"),
        ("webhook secrets", "ok"),
        (f"webhook {hook.id} ping", "ok"),
    ], [c.line() for c in checks]
    assert str(hook.new_signing_secret) not in " ".join(c.line() for c in checks)


def test_concurrent_deliveries_are_each_recorded_once_and_answered_after_commit(
    settings: Settings, receiver: RunningReceiver
) -> None:
    jobs = [running_job(settings, f"v1_many_{n}") for n in range(12)]
    sends = [(event(f"v1_many_{n}", job.id), f"msg_many_{n}") for n, job in enumerate(jobs)]
    sends.append(sends[0])  # the same delivery twice, at the same time
    with ThreadPoolExecutor(len(sends)) as pool:
        answers = list(pool.map(lambda s: post(receiver.url, s[0], signed_headers(s[0], s[1])), sends))
    assert sorted(a[1]["outcome"] for a in answers) == ["due"] * 12 + ["duplicate"]
    assert len(deliveries(settings)) == 12 and all(is_due(settings, job.id) for job in jobs)  # committed on answer


def test_two_receivers_behind_a_load_balancer_record_a_retried_delivery_once(
    settings: Settings, receiver: RunningReceiver
) -> None:
    # The sender's retry of each delivery reaches the other receiver at the same moment as the first attempt.
    other = RunningReceiver(settings)
    try:
        jobs = [running_job(settings, f"v1_lb_{n}") for n in range(6)]
        sends = [(url, event(f"v1_lb_{n}", job.id), f"msg_lb_{n}") for n, job in enumerate(jobs)
                 for url in (receiver.url, other.url)]  # fmt: skip
        with ThreadPoolExecutor(len(sends)) as pool:
            answers = list(pool.map(lambda s: post(s[0], s[1], signed_headers(s[1], s[2])), sends))
    finally:
        other.stop()
    assert all(status == 200 for status, _ in answers)
    assert sorted(a[1]["outcome"] for a in answers) == ["due"] * 6 + ["duplicate"] * 6
    assert sorted(d.webhook_id for d in deliveries(settings)) == sorted(f"msg_lb_{n}" for n in range(6))


def test_one_batch_records_a_repeated_id_once_and_keeps_nothing_of_a_leased_job(settings: Settings) -> None:
    free, leased = running_job(settings, "v1_free"), running_job(settings, "v1_held", leased=True)
    batch = [Delivery("msg_a", target_of(json.loads(event("v1_free", free.id)))),
             Delivery("msg_a", target_of(json.loads(event("v1_free", free.id)))),
             Delivery("msg_b", target_of(json.loads(event("v1_held", leased.id)))),
             Delivery("msg_c", target_of(json.loads(event("v1_nobody"))))]  # fmt: skip
    with db.get_engine(settings.database_url).connect() as conn, conn.begin():
        outcomes = record_batch(conn, batch, utcnow())
    assert outcomes == ["due", DUPLICATE, BUSY, "unknown"]
    assert sorted(d.webhook_id for d in deliveries(settings)) == ["msg_a", "msg_c"]  # the busy one is retried
    assert is_due(settings, free.id) and not is_due(settings, leased.id)
