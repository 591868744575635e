"""Webhook deliveries: an interaction's end pushed to its webhooks, signed, retried, and faulted on request.

What it reproduces (Gemini API webhooks docs, "Webhooks" in docs/emulator.md):
- events `interaction.completed|failed|requires_action` (SDK 3.6.1 `WebhookSubscribedEvent`) and
  `interaction.cancelled` (the JS SDK's type), sent when an interaction reaches that status;
- an interaction created with `webhook_config.uris` (SDK `WebhookConfig`: "these webhook URIs will be used ...
  instead of the registered webhooks") is delivered there only, signed as an RS256 JWT whose keys this emulator
  publishes as a JWKS; otherwise every enabled registered webhook subscribed to the event gets it, signed with
  Standard Webhooks HMAC-SHA256 (`webhook-signature: v1,<base64>`, one entry per live secret during a rotation);
- `webhook_config.user_metadata` is returned with every event ("returned on each event emission");
- at least once, retried with exponential backoff on a non-2xx answer or no answer, for up to 24 hours.
The payload's shape is not documented; we send a Standard Webhooks envelope `{type, timestamp, data: {id,
status, user_metadata}}`. Nothing here runs until the first interaction or ping needs a delivery.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import itertools
import json
import random
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from standardwebhooks import Webhook as Signer

from .lifecycle import Interaction, iso

EVENT_OF_STATUS = {
    "completed": "interaction.completed",
    "failed": "interaction.failed",
    "requires_action": "interaction.requires_action",
    "cancelled": "interaction.cancelled",
}
PING_EVENT = "webhook.ping"  # the docs do not name the ping's event type; this is our choice
TICK = 0.05  # seconds between looks at what is due
SEND_TIMEOUT = 5.0
MAX_PARALLEL_SENDS = 32
JWT_LIFETIME = 300
FAULT_NAMES = ("drop", "duplicate", "delay", "reorder", "bad_signature", "stale_timestamp")
STALE_BY = 600  # seconds a `stale_timestamp` fault backdates the first attempt


@dataclass
class Policy:
    """Retry schedule and fault rates; PUT /_emulator/webhook-faults changes them, reset restores them."""

    retry_initial: float = 1.0
    retry_max: float = 3600.0
    give_up_after: float = 86_400.0
    delay_seconds: float = 2.0
    rates: dict[str, float] = field(default_factory=dict)


@dataclass
class Message:
    webhook_id: str
    url: str
    body: bytes
    event: str
    sign: Callable[[str, int, bytes], str]  # (webhook-id, timestamp, body) -> webhook-signature
    first_at: float
    attempt: int = 0
    spoil: str | None = None  # bad_signature or stale_timestamp: the first attempt only
    interaction_id: str | None = None  # for the admin log: whose end this is (none for a ping)


class KeyRing:
    """RS256 keys for per-request webhooks; rotating adds a key (new kid) and signs with it, keeping the old."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, rsa.RSAPrivateKey]] = []
        self.rotate()

    def rotate(self) -> str:
        kid = uuid.uuid4().hex[:16]
        self.keys.append((kid, rsa.generate_private_key(public_exponent=65537, key_size=2048)))
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append(jwk | {"kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def sign(self, webhook_id: str, timestamp: int, body: bytes) -> str:
        kid, key = self.keys[-1]
        digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")
        claims = {"iss": "research-emulator", "iat": timestamp, "exp": timestamp + JWT_LIFETIME,
                  "webhook_id": webhook_id, "body_sha256": digest}  # fmt: skip
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def hmac_signer(live_secrets: Callable[[], list[str]]) -> Callable[[str, int, bytes], str]:
    def sign(webhook_id: str, timestamp: int, body: bytes) -> str:
        when = datetime.fromtimestamp(timestamp, UTC)
        return " ".join(Signer(s).sign(webhook_id, when, body.decode()) for s in live_secrets())

    return sign


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class Deliverer:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.keyring = KeyRing()
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()  # asyncio keeps only weak references to tasks
        self.reset()

    def reset(self) -> None:
        self.policy = Policy()
        self.rng = random.Random(f"{self.seed}:webhooks")
        self._watched: list[tuple[float, int, Interaction, dict[str, Any] | None]] = []
        self._queue: list[tuple[float, int, Message]] = []
        self._seq = itertools.count()
        self.counts: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []  # the last deliveries, newest last, for tests and `stats`
        self._configs: dict[str, dict[str, Any] | None] = {}
        self._emitted: set[str] = set()
        self.targets: Callable[[str], list[tuple[str, Callable[[str, int, bytes], str]]]] = lambda event: []

    # ---- hooks called by the app -------------------------------------------------------------------
    def watch(self, it: Interaction, config: dict[str, Any] | None) -> None:
        """Remember an interaction whose end is to be pushed; the loop checks it when its end is due."""
        self._configs[it.id] = config
        self.poke(it)

    def poke(self, it: Interaction) -> None:
        """Look at a watched interaction again at its (possibly new) end, e.g. after a cancel."""
        if it.id not in self._configs:
            return
        end, _ = it.end()
        due = it.created_mono + (end if end is not None else 3600.0)
        heapq.heappush(self._watched, (due, next(self._seq), it, self._configs[it.id]))
        self._ensure_running()

    def ping(self, url: str, sign: Callable[[str, int, bytes], str]) -> None:
        self._enqueue(url, PING_EVENT, {"type": PING_EVENT, "timestamp": iso(time.time()), "data": {}}, sign)
        self._ensure_running()

    # ---- the loop ------------------------------------------------------------------------------------
    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        sending = asyncio.Semaphore(MAX_PARALLEL_SENDS)
        while True:
            now = time.monotonic()
            self._check_watched(now)
            while self._queue and self._queue[0][0] <= now:
                _, _, message = heapq.heappop(self._queue)
                await sending.acquire()
                task = asyncio.create_task(self._send(message))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
                task.add_done_callback(lambda _: sending.release())
            await asyncio.sleep(TICK)

    def _check_watched(self, now: float) -> None:
        while self._watched and self._watched[0][0] <= now:
            _, _, it, config = heapq.heappop(self._watched)
            end, status = it.end()
            if end is None or status is None:
                heapq.heappush(self._watched, (now + 3600.0, next(self._seq), it, config))
            elif it.created_mono + end > now:  # cancelled later than first thought, or not due yet
                heapq.heappush(self._watched, (it.created_mono + end, next(self._seq), it, config))
            elif status in EVENT_OF_STATUS and not it.deleted and it.id not in self._emitted:
                self._emitted.add(it.id)
                self._configs.pop(it.id, None)
                self._emit(it, EVENT_OF_STATUS[status], status, config)

    def _emit(self, it: Interaction, event: str, status: str, config: dict[str, Any] | None) -> None:
        data: dict[str, Any] = {"id": it.id, "status": status}
        if config and config.get("user_metadata"):
            data["user_metadata"] = config["user_metadata"]
        payload = {"type": event, "timestamp": iso(time.time()), "data": data}
        uris = (config or {}).get("uris")
        targets = [(uri, self.keyring.sign) for uri in uris] if uris else self.targets(event)
        for url, sign in targets:
            self._enqueue(url, event, payload, sign)

    def _enqueue(self, url: str, event: str, payload: dict[str, Any], sign: Callable[[str, int, bytes], str]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        message = Message("msg_" + uuid.uuid4().hex, url, body, event, sign, time.time())
        message.interaction_id = payload["data"].get("id")
        self.counts["events"] += 1
        draw = {name: self.rng.random() < self.policy.rates.get(name, 0.0) for name in FAULT_NAMES}
        if draw["drop"]:
            self.counts["dropped"] += 1
            return
        message.spoil = (
            "bad_signature" if draw["bad_signature"] else "stale_timestamp" if draw["stale_timestamp"] else None
        )
        delay = self.policy.delay_seconds if draw["delay"] else 0.0
        if draw["reorder"]:
            delay += self.rng.uniform(0, self.policy.delay_seconds)
        self._push(message, delay)
        if draw["duplicate"]:
            self.counts["duplicated"] += 1
            copy = Message(message.webhook_id, url, body, event, message.sign, message.first_at)
            copy.interaction_id = message.interaction_id
            self._push(copy, delay + self.rng.uniform(0, 0.2))

    def _push(self, message: Message, delay: float) -> None:
        heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), message))

    async def _send(self, message: Message) -> None:
        sent_at, spoil = time.time(), message.spoil  # _post clears the spoil: it spoils one attempt only
        status = await asyncio.to_thread(self._post, message)
        self._note(message, status, sent_at, spoil)
        if 200 <= status < 300:
            self.counts["acknowledged"] += 1
            return
        message.attempt += 1
        if time.time() - message.first_at > self.policy.give_up_after:
            self.counts["given_up"] += 1
            return
        self.counts["retries"] += 1
        self._push(message, min(self.policy.retry_initial * 2 ** (message.attempt - 1), self.policy.retry_max))

    def _note(self, message: Message, status: int, sent_at: float, spoil: str | None) -> None:
        """Count the attempt and keep it in the admin log (wall-clock `sent_at`: tests check the backoff)."""
        self.counts[f"status_{status}"] += 1
        self.log = [*self.log[-199:], {"webhook_id": message.webhook_id, "event": message.event,
                                       "interaction_id": message.interaction_id, "url": message.url,
                                       "attempt": message.attempt, "status": status, "sent_at": sent_at,
                                       "spoil": spoil}]  # fmt: skip

    def _post(self, message: Message) -> int:
        """One attempt; 0 when nothing answered (connection refused, timeout)."""
        stamp = int(time.time())
        spoil, message.spoil = message.spoil, None
        if spoil == "stale_timestamp":
            stamp -= STALE_BY
        signature = message.sign(message.webhook_id, stamp, message.body)
        if spoil == "bad_signature":
            signature = "v1," + base64.b64encode(secrets.token_bytes(32)).decode()
        headers = {"content-type": "application/json", "webhook-id": message.webhook_id,
                   "webhook-timestamp": str(stamp), "webhook-signature": signature}  # fmt: skip
        request = urllib.request.Request(message.url, data=message.body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=SEND_TIMEOUT) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (OSError, ValueError):
            return 0

    def stats(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "pending": len(self._queue), "watched": len(self._watched),
                "recent": self.log[-50:]}  # fmt: skip
