"""The webhooks resource (`/{version}/webhooks`) as google-genai 3.6.1 calls it (`client.webhooks`).

Shapes follow the SDK's generated types (`_gaos/types/webhooks/`): `Webhook {id, name, uri, subscribed_events,
state, signing_secrets[{truncated_secret, expire_time}], new_signing_secret (only on create), create_time,
update_time}`, `WebhookListResponse {webhooks, next_page_token}` (page_size default 50, max 1000, per the SDK
docstring), `WebhookRotateSigningSecretResponse {secret}` with `revocation_behavior`
`revoke_previous_secrets_after_h24|revoke_previous_secrets_immediately`, and `Empty` for delete and ping.
Where the docs are silent (error texts, id format, what update does without `update_mask`) the choices are
ours: 404 `not_found` for an unknown id, 400 `invalid_request` for a bad field, fields present in the body are
updated when no mask is given.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .delivery import Deliverer, hmac_signer, new_secret
from .lifecycle import iso
from .store import ApiError, bad_request

STATES = ("enabled", "disabled", "disabled_due_to_failed_deliveries")
ROTATION_GRACE = 24 * 3600.0  # "revoke_previous_secrets_after_h24"
DEFAULT_PAGE, MAX_PAGE = 50, 1000
UPDATABLE = ("name", "state", "subscribed_events", "uri")


@dataclass
class Hook:
    id: str
    uri: str
    subscribed_events: list[str]
    name: str | None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    state: str = "enabled"
    secrets: list[tuple[str, float | None]] = field(default_factory=list)  # (secret, expires at wall time)

    def live_secrets(self) -> list[str]:
        now = time.time()
        return [s for s, expires in self.secrets if expires is None or expires > now]

    def resource(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "uri": self.uri,
            "subscribed_events": self.subscribed_events,
            "state": self.state,
            "create_time": iso(self.created),
            "update_time": iso(self.updated),
        }
        if self.name:
            body["name"] = self.name
        body["signing_secrets"] = [
            {"truncated_secret": s[:10] + "..."} | ({"expire_time": iso(e)} if e else {})
            for s, e in self.secrets
            if e is None or e > time.time()
        ]
        return body


class Registry:
    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self.hooks: dict[str, Hook] = {}
        deliverer.targets = self.targets

    def reset(self) -> None:
        self.hooks.clear()
        self.deliverer.targets = self.targets

    def targets(self, event: str) -> list[tuple[str, Any]]:
        return [(h.uri, hmac_signer(h.live_secrets)) for h in self.hooks.values()
                if h.state == "enabled" and event in h.subscribed_events]  # fmt: skip

    def get(self, hook_id: str) -> Hook:
        hook = self.hooks.get(hook_id)
        if hook is None:
            raise ApiError(404, "not_found", f"webhook {hook_id!r} was not found")
        return hook

    def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        hook = Hook(id=uuid.uuid4().hex[:20], uri=_uri(body.get("uri")),
                    subscribed_events=_events(body.get("subscribed_events")), name=_name(body.get("name")))  # fmt: skip
        secret = new_secret()
        hook.secrets.append((secret, None))
        self.hooks[hook.id] = hook
        return hook.resource() | {"new_signing_secret": secret}  # "Only populated on create."

    def list(self, page_size: str | None, page_token: str | None) -> dict[str, Any]:
        size = _page_size(page_size)
        start = int(page_token) if page_token and page_token.isdigit() else 0
        hooks = sorted(self.hooks.values(), key=lambda h: h.created)
        page = hooks[start : start + size]
        body: dict[str, Any] = {"webhooks": [h.resource() for h in page]}
        if start + size < len(hooks):
            body["next_page_token"] = str(start + size)
        return body

    def update(self, hook_id: str, body: Any, mask: str | None) -> dict[str, Any]:
        hook = self.get(hook_id)
        if not isinstance(body, dict):
            raise bad_request("request body must be a JSON object")
        fields = [f.strip() for f in mask.split(",")] if mask else [f for f in UPDATABLE if f in body]
        for name in fields:
            if name not in UPDATABLE:
                raise bad_request(f"update_mask names {name!r}, which cannot be updated")
        checks = {"uri": _uri, "subscribed_events": _events, "name": _name, "state": _state}
        for name in fields:
            setattr(hook, name, checks[name](body.get(name)))
        hook.updated = time.time()
        return hook.resource()

    def rotate(self, hook_id: str, body: Any) -> dict[str, Any]:
        hook = self.get(hook_id)
        behavior = (body or {}).get("revocation_behavior") or "revoke_previous_secrets_after_h24"
        if behavior not in ("revoke_previous_secrets_after_h24", "revoke_previous_secrets_immediately"):
            raise bad_request(f"unknown revocation_behavior {behavior!r}")
        until = time.time() + (ROTATION_GRACE if behavior.endswith("h24") else 0.0)
        hook.secrets = [(s, min(e, until) if e else until) for s, e in hook.secrets]
        secret = new_secret()
        hook.secrets.append((secret, None))
        hook.updated = time.time()
        return {"secret": secret}

    def ping(self, hook_id: str) -> dict[str, Any]:
        hook = self.get(hook_id)
        self.deliverer.ping(hook.uri, hmac_signer(hook.live_secrets))
        return {}

    def delete(self, hook_id: str) -> dict[str, Any]:
        self.get(hook_id)
        del self.hooks[hook_id]
        return {}


def parse_webhook_config(value: Any) -> dict[str, Any] | None:
    """Validate a create's `webhook_config` (SDK `WebhookConfig {uris?: list[str], user_metadata?: dict}`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("`webhook_config` must be an object")
    uris = value.get("uris")
    if uris is not None and (not isinstance(uris, list) or not all(isinstance(u, str) for u in uris)):
        raise bad_request("`webhook_config.uris` must be a list of URLs")
    for uri in uris or []:
        _uri(uri)
    metadata = value.get("user_metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_request("`webhook_config.user_metadata` must be an object")
    return {"uris": uris or None, "user_metadata": metadata}


def _uri(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise bad_request("`uri` is required and must be an http(s) URL")
    return value


def _events(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(e, str) and e for e in value):
        raise bad_request("`subscribed_events` is required: a non-empty list of event names")
    return list(dict.fromkeys(value))


def _name(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise bad_request("`name` must be a string")
    return value or None


def _state(value: Any) -> str:
    if value not in STATES:
        raise bad_request(f"`state` must be one of {', '.join(STATES)}")
    return str(value)


def _page_size(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PAGE
    if not value.isdigit() or int(value) < 1:
        raise bad_request("`page_size` must be a positive integer")
    return min(int(value), MAX_PAGE)


def loads(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("request body is not valid JSON") from None
