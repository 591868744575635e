"""The emulator's webhooks resource through the real SDK (`client.webhooks`), parsed into its types."""

from __future__ import annotations

from typing import Any

import pytest
from google.genai import _interactions as sdk_errors

from emulator_support import assert_known

EVENTS = ["interaction.completed", "interaction.failed"]


def test_create_returns_the_secret_once_and_get_list_never_do(emulator: Any) -> None:
    client = emulator.client()
    created = client.webhooks.create(uri="https://example.org/hook", subscribed_events=EVENTS, name="runner")
    assert_known(created)
    assert created.new_signing_secret and created.new_signing_secret.startswith("whsec_")
    assert created.id and created.state == "enabled" and created.subscribed_events == EVENTS
    fetched = client.webhooks.get(created.id)
    assert_known(fetched)
    assert fetched.new_signing_secret is None
    assert fetched.signing_secrets and fetched.signing_secrets[0].truncated_secret
    assert created.new_signing_secret not in fetched.model_dump_json()
    listed = client.webhooks.list()
    assert_known(listed)
    assert [w.id for w in listed.webhooks or []] == [created.id]
    assert all(w.new_signing_secret is None for w in listed.webhooks or [])


def test_list_pages_through_next_page_token(emulator: Any) -> None:
    client = emulator.client()
    ids = [client.webhooks.create(uri=f"https://example.org/{i}", subscribed_events=EVENTS).id for i in range(3)]
    first = client.webhooks.list(page_size=2)
    assert len(first.webhooks or []) == 2 and first.next_page_token
    second = client.webhooks.list(page_size=2, page_token=first.next_page_token)
    assert second.next_page_token is None
    assert [w.id for w in [*(first.webhooks or []), *(second.webhooks or [])]] == ids


def test_update_with_and_without_mask(emulator: Any) -> None:
    client = emulator.client()
    hook = client.webhooks.create(uri="https://example.org/a", subscribed_events=EVENTS)
    updated = client.webhooks.update(hook.id, uri="https://example.org/b", state="disabled")
    assert_known(updated)
    assert (updated.uri, updated.state) == ("https://example.org/b", "disabled")
    masked = client.webhooks.update(hook.id, update_mask="name", name="renamed", uri="https://ignored.example")
    assert (masked.name, masked.uri) == ("renamed", "https://example.org/b")


def test_rotate_keeps_the_old_secret_for_24h_unless_told_otherwise(emulator: Any) -> None:
    client = emulator.client()
    hook = client.webhooks.create(uri="https://example.org/a", subscribed_events=EVENTS)
    rotated = client.webhooks.rotate_signing_secret(hook.id)
    assert_known(rotated)
    assert rotated.secret and rotated.secret.startswith("whsec_") and rotated.secret != hook.new_signing_secret
    secrets = client.webhooks.get(hook.id).signing_secrets or []
    assert len(secrets) == 2 and secrets[0].expire_time is not None and secrets[1].expire_time is None
    client.webhooks.rotate_signing_secret(hook.id, revocation_behavior="revoke_previous_secrets_immediately")
    assert len(client.webhooks.get(hook.id).signing_secrets or []) == 1


def test_ping_and_delete(emulator: Any) -> None:
    client = emulator.client()
    hook = client.webhooks.create(uri="http://127.0.0.1:9/unreachable", subscribed_events=EVENTS)
    assert_known(client.webhooks.ping(hook.id))
    assert_known(client.webhooks.delete(hook.id))
    with pytest.raises(sdk_errors.NotFoundError):
        client.webhooks.get(hook.id)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"uri": "ftp://example.org", "subscribed_events": EVENTS}, "uri"),
        ({"uri": "https://example.org", "subscribed_events": []}, "subscribed_events"),
    ],
)
def test_bad_create_is_a_400(emulator: Any, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(sdk_errors.BadRequestError) as caught:
        emulator.client().webhooks.create(**kwargs)
    assert fragment in str(caught.value)


def test_unknown_webhook_is_a_404(emulator: Any) -> None:
    with pytest.raises(sdk_errors.NotFoundError):
        emulator.client().webhooks.rotate_signing_secret("no-such-hook")


def test_bad_webhook_config_on_create_is_a_400(emulator: Any) -> None:
    with pytest.raises(sdk_errors.BadRequestError) as caught:
        emulator.client().interactions.create(
            agent="deep-research-preview-04-2026", input="q", background=True, webhook_config={"uris": ["nope"]}
        )
    assert "uri" in str(caught.value)
