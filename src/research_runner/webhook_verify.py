"""Checking that a webhook delivery comes from the API, before anything else is done with it.

Two schemes, both with Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`):
- static (project) webhooks: `webhook-signature` holds `v1,<base64 HMAC-SHA256 of id.timestamp.body>` entries,
  checked with `standardwebhooks` against every configured secret (several during a rotation);
- per-request webhooks (`webhook_config.uris`): `webhook-signature` holds an RS256 JWT, checked with pyjwt
  against the JWKS published at RESEARCH_WEBHOOK_JWKS_URL, cached and fetched again for an unknown key id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from standardwebhooks import Webhook, WebhookVerificationError

JWKS_MAX_AGE = 3600.0  # seconds a fetched key set is trusted before it is fetched again
JWKS_MIN_REFETCH = 0.5  # an unknown key id fetches at most this often, so forged ids cannot flood the URL
JWKS_TIMEOUT = 5.0


class Rejected(Exception):
    """A delivery refused before anything was recorded; the message is safe to log (never the body)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Verified:
    webhook_id: str
    scheme: str  # "hmac" or "jwt"
    payload: dict[str, Any]


def check_timestamp(value: str | None, tolerance: float, now: float) -> float:
    """The delivery's Unix timestamp, refused when missing, malformed or further than `tolerance` from now."""
    try:
        stamp = float(value or "")
    except ValueError:
        raise Rejected(401, "missing or malformed webhook-timestamp") from None
    if abs(now - stamp) > tolerance:
        raise Rejected(401, f"webhook-timestamp is {now - stamp:+.0f} s from now (tolerance {tolerance:g} s)")
    return stamp


def is_jwt(signature: str) -> bool:
    """A compact JWS (three dot-separated parts) rather than Standard Webhooks' `v1,<base64>` entries."""
    return signature.count(".") == 2 and "," not in signature and " " not in signature


def verify_hmac(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
    """Accept if any entry of `webhook-signature` matches any secret; `standardwebhooks` does the HMAC."""
    if not secrets:
        raise Rejected(401, "an HMAC-signed delivery arrived but no webhook secret is configured")
    for secret in secrets:
        try:
            Webhook(secret).verify(body, dict(headers), json_parse=False)
            return
        except (WebhookVerificationError, ValueError, UnicodeDecodeError):
            continue  # a malformed entry or another secret's signature: try the next secret
    raise Rejected(401, "no webhook-signature entry matches a configured secret")


class Jwks:
    """The published public keys by key id: cached, and fetched again when a delivery names an unknown one."""

    def __init__(self, url: str, fetch: Callable[[str], bytes] | None = None) -> None:
        self.url = url
        self._fetch = fetch or _get
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()
        self.fetches = 0

    def cached(self, token: str) -> bool:
        """Whether the key a JWT names is at hand, so checking it fetches nothing (and cannot wait on the network)."""
        try:
            kid = str(jwt.get_unverified_header(token).get("kid") or "")
        except jwt.PyJWTError:
            return False
        return self._fresh(kid) is not None

    def _fresh(self, kid: str) -> Any:
        keys = self._keys  # one read: a fetch replaces the whole dict
        return keys.get(kid) if time.monotonic() - self._fetched_at <= JWKS_MAX_AGE else None

    def key(self, kid: str) -> Any:
        if (key := self._fresh(kid)) is not None:  # no lock: a fetch for another key id may hold it for seconds
            return key
        with self._lock:
            stale = time.monotonic() - self._fetched_at > JWKS_MAX_AGE
            unknown = kid not in self._keys and time.monotonic() - self._fetched_at > JWKS_MIN_REFETCH
            if stale or unknown:
                self._refresh()
            if kid not in self._keys:
                raise Rejected(401, f"JWT key id {kid[:64]!r} is not in the published key set")
            return self._keys[kid]

    def _refresh(self) -> None:
        try:
            document = json.loads(self._fetch(self.url))
            keys = {k["kid"]: jwt.PyJWK(k).key for k in document.get("keys", []) if k.get("kid")}
        except Exception as exc:  # the previous keys stay in force; a delivery they cannot check is refused
            raise Rejected(401, f"cannot fetch the webhook JWKS: {type(exc).__name__}") from None
        self._keys, self._fetched_at = keys, time.monotonic()
        self.fetches += 1


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=JWKS_TIMEOUT) as response:
        return bytes(response.read())


def verify_jwt(token: str, body: bytes, webhook_id: str, jwks: Jwks | None, leeway: float) -> None:
    """Check the RS256 signature, expiry and, where the token names them, the delivery id and body digest.

    What Google puts in the claims is not in the material we have; the token is bound to this delivery
    when it carries `webhook_id`/`body_sha256` (as the emulator's do). Even unbound, a forged body can
    only make a job's poll due early: the report always comes from a GET.
    """
    if jwks is None:
        raise Rejected(401, "a JWT-signed delivery arrived but RESEARCH_WEBHOOK_JWKS_URL is not set")
    try:
        kid = str(jwt.get_unverified_header(token).get("kid") or "")
        claims = jwt.decode(token, jwks.key(kid), algorithms=["RS256"], leeway=leeway, options={"verify_aud": False})
    except jwt.PyJWTError as exc:
        raise Rejected(401, f"JWT not valid: {type(exc).__name__}") from None
    if "webhook_id" in claims and claims["webhook_id"] != webhook_id:
        raise Rejected(401, "JWT was issued for another delivery")
    if "body_sha256" in claims and claims["body_sha256"] != body_digest(body):
        raise Rejected(401, "JWT does not match the delivered body")


def body_digest(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")


def verify(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], jwks: Jwks | None, tolerance: float
) -> Verified:
    """The delivery's id and parsed payload, once its timestamp and signature hold; raises Rejected."""
    webhook_id = headers.get("webhook-id", "")
    signature = headers.get("webhook-signature", "")
    if not webhook_id or not signature:
        raise Rejected(401, "missing webhook-id or webhook-signature")
    if len(webhook_id) > 255:
        raise Rejected(401, "webhook-id longer than 255 characters")
    check_timestamp(headers.get("webhook-timestamp"), tolerance, time.time())
    if is_jwt(signature):
        verify_jwt(signature, body, webhook_id, jwks, tolerance)
        scheme = "jwt"
    else:
        verify_hmac(body, headers, secrets)
        scheme = "hmac"
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(400, "signed body is not JSON") from None
    return Verified(webhook_id, scheme, payload if isinstance(payload, dict) else {})
