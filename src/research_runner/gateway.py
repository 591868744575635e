"""The only module that talks to the Interactions API, through google-genai.

Creates are sent with the SDK's retries off: a create retried after a lost response can start a second
paid research job. Reads and cancels are safe to repeat and keep a few SDK retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from google import genai
from google.genai import _interactions as sdk_errors
from google.genai import types

from research_runner.constants import JOB_LABEL
from research_runner.exceptions import CreateOutcomeUnknown, GatewayError, PermanentError, RetryableError
from research_runner.sdk_speedups import create_request, install_sdk_speedups
from research_runner.settings import Settings
from research_runner.snapshot import Snapshot, snapshot_from_json
from research_runner.status import REMOTE_TERMINAL

SDK_MAX_RETRY_DELAY = 8.0
# Statuses where the request certainly did nothing on Google's side.
NOT_PROCESSED_STATUSES = frozenset({429})
# Transport errors raised before a request left this machine. Matched by name because the SDK may run on
# httpx or httpx2, whose classes differ.
NOT_SENT_TRANSPORT_ERRORS = frozenset({"ConnectError", "ConnectTimeout"})
# Consecutive stream drops without a single new event before following a stream gives up.
STREAM_RECONNECTS = 5
STREAM_BACKOFF_MAX = 5.0
# An interaction id that cannot exist: asking for it costs nothing and shows whether the API accepts the key.
PROBE_INTERACTION_ID = "research-runner-doctor-probe"
# The SDK's error event, and the name Google's docs table gives it (which the SDK parses as an Unknown event).
ERROR_EVENTS = frozenset({"error", "interaction.error"})


@dataclass(frozen=True)
class StreamEvent:
    """One event of an interaction's stream, reduced to what a viewer shows."""

    event_id: str | None
    kind: str  # the API's event_type, e.g. "step.delta"
    status: str | None = None  # the interaction's status, on status updates and created/completed events
    thought: str | None = None  # a thought summary, from a delta or a whole thought step
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.kind == "interaction.completed" or self.kind in ERROR_EVENTS or self.status in REMOTE_TERMINAL


class Gateway:
    def __init__(self, settings: Settings) -> None:
        if settings.api_key is None:
            raise PermanentError(
                "no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or point RESEARCH_GEMINI_BASE_URL at an emulator "
                "and set any key"
            )
        install_sdk_speedups()
        self.endpoint = settings.api_endpoint
        self._create_client = _client(settings, attempts=1)
        self._read_client = _client(settings, attempts=settings.get_attempts)

    def create(
        self, question: str | list[dict[str, Any]], agent: str, job_id: str, *,
        agent_config: dict[str, Any] | None = None, previous_interaction_id: str | None = None,
        webhook_config: dict[str, Any] | None = None,
    ) -> str:  # fmt: skip
        """Start a background research; returns the interaction id."""
        body: dict[str, Any] = {"agent": agent, "input": question, "background": True, "labels": {JOB_LABEL: job_id}}
        if agent_config:
            body["agent_config"] = agent_config
        if previous_interaction_id:
            body["previous_interaction_id"] = previous_interaction_id
        if webhook_config:
            body["webhook_config"] = webhook_config
        request = create_request(body)
        try:
            # The raw reply, as for a get: only its id is needed, and the SDK's typed reply (an Interaction) cost
            # about a quarter of a create's CPU in the worker (issue 16).
            create = self._create_client.interactions.with_raw_response.create
            raw = create(**body) if request is None else create(request=request)
        except sdk_errors.GeminiNextGenAPIClientError as exc:
            raise classify_create_error(exc) from exc
        return _interaction_id(raw)

    def get(self, interaction_id: str) -> Snapshot:
        # The raw response skips the SDK's per-call model building, which costs ~4x the CPU of the request.
        try:
            raw = self._read_client.interactions.with_raw_response.get(interaction_id)
            return snapshot_from_json(raw.json())
        except sdk_errors.GeminiNextGenAPIClientError as exc:
            raise classify_error(exc) from exc

    def stream(self, interaction_id: str, last_event_id: str | None = None) -> Iterator[StreamEvent]:
        """The interaction's events after `last_event_id`, until it ends; a dropped stream is resumed.

        The SDK does not resume by itself: a cut raises APIConnectionError mid-iteration, so this reconnects
        with the last event id seen. It gives up after STREAM_RECONNECTS drops in a row without a new event.
        """
        drops = 0
        while True:
            try:
                for event in self._stream_once(interaction_id, last_event_id):
                    last_event_id = event.event_id or last_event_id
                    drops = 0
                    yield event
                    if event.terminal:
                        return
                problem: GatewayError = RetryableError("the stream closed before the interaction ended")
            except RetryableError as exc:
                problem = exc
            drops += 1
            if drops > STREAM_RECONNECTS:
                raise RetryableError(f"the event stream dropped {drops} times in a row: {problem}")
            if drops > 1:  # the first reconnect is immediate; repeated drops give the server a breather
                time.sleep(min(0.25 * 2 ** (drops - 2), STREAM_BACKOFF_MAX))

    def _stream_once(self, interaction_id: str, last_event_id: str | None) -> Iterator[StreamEvent]:
        try:
            events = self._read_client.interactions.get(interaction_id, stream=True, last_event_id=last_event_id)
            with events:
                for event in events:
                    yield stream_event(event)
        except sdk_errors.GeminiNextGenAPIClientError as exc:
            raise classify_error(exc) from exc

    def check_access(self) -> None:
        """Ask for an interaction that cannot exist: a 404 shows the API answers and accepts the key."""
        try:
            self._read_client.interactions.with_raw_response.get(PROBE_INTERACTION_ID)
        except sdk_errors.NotFoundError:
            return
        except sdk_errors.GeminiNextGenAPIClientError as exc:
            raise classify_error(exc) from exc

    def delete(self, interaction_id: str) -> bool:
        """Delete a stored interaction at Google (`interactions.delete`); False if the API no longer has it."""
        try:
            self._read_client.interactions.delete(interaction_id)
        except sdk_errors.NotFoundError:
            return False
        except sdk_errors.GeminiNextGenAPIClientError as exc:
            raise classify_error(exc) from exc
        return True

    def cancel(self, interaction_id: str) -> Snapshot:
        try:
            raw = self._read_client.interactions.with_raw_response.cancel(interaction_id)
            return snapshot_from_json(raw.json())
        except sdk_errors.GeminiNextGenAPIClientError as exc:
            raise classify_error(exc) from exc

    # ---- static webhooks (SDK `client.webhooks`): management calls, safe to repeat except create ----------
    def create_webhook(self, uri: str, events: list[str], name: str | None = None) -> dict[str, Any]:
        """Register a project webhook; the result holds `new_signing_secret`, which the API shows only here."""
        return self._webhook_call(self._create_client.webhooks.create, uri=uri, subscribed_events=events, name=name)

    def list_webhooks(self) -> list[dict[str, Any]]:
        listed = self._webhook_call(self._read_client.webhooks.list)
        return list(listed.get("webhooks") or [])

    def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        return self._webhook_call(self._read_client.webhooks.get, webhook_id)

    def update_webhook(self, webhook_id: str, **fields: Any) -> dict[str, Any]:
        return self._webhook_call(self._read_client.webhooks.update, webhook_id, **fields)

    def delete_webhook(self, webhook_id: str) -> None:
        self._webhook_call(self._read_client.webhooks.delete, webhook_id)

    def rotate_webhook_secret(self, webhook_id: str, revoke_now: bool = False) -> str:
        """A new signing secret; the previous ones stay valid for 24 h unless `revoke_now`."""
        behavior = "revoke_previous_secrets_immediately" if revoke_now else "revoke_previous_secrets_after_h24"
        rotated = self._webhook_call(
            self._create_client.webhooks.rotate_signing_secret, webhook_id, revocation_behavior=behavior
        )
        if not rotated.get("secret"):
            raise PermanentError("the API rotated the webhook's secret but returned no new secret")
        return str(rotated["secret"])

    def ping_webhook(self, webhook_id: str) -> None:
        self._webhook_call(self._read_client.webhooks.ping, webhook_id)

    def _webhook_call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            result = method(*args, **{k: v for k, v in kwargs.items() if v is not None})
        except sdk_errors.GeminiNextGenAPIClientError as exc:
            raise classify_error(exc) from exc
        dumped = result.model_dump(mode="json", exclude_none=True) if hasattr(result, "model_dump") else {}
        return dict(dumped)


def _interaction_id(raw: Any) -> str:
    """The id in a create's raw reply (an Interaction's JSON); a reply without one may still have started it."""
    try:
        data = raw.json()
    except ValueError:
        data = None
    interaction_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(interaction_id, str) or not interaction_id:
        raise CreateOutcomeUnknown("the API accepted the create but returned no interaction id")
    return interaction_id


def stream_event(event: Any) -> StreamEvent:
    """Reduce one SDK stream event (a typed model) to a StreamEvent.

    Google's docs name the thought delta `thought` and the error event `interaction.error`; the SDK parses those
    as Unknown models that keep the JSON in `raw`, so both spellings are read.
    """
    raw = _unknown_raw(event)
    if raw is not None:
        return _from_raw(raw)
    kind = str(getattr(event, "event_type", "") or "")
    event_id = getattr(event, "event_id", None)
    base = StreamEvent(event_id=str(event_id) if event_id else None, kind=kind)
    if kind == "interaction.status_update":
        return _with(base, status=getattr(event, "status", None))
    if kind in ("interaction.created", "interaction.completed"):
        return _with(base, status=getattr(getattr(event, "interaction", None), "status", None))
    if kind == "step.delta":
        return _with(base, thought=_delta_thought(event.delta))
    if kind == "step.start" and getattr(event.step, "type", None) == "thought":
        # Some streams carry whole thought steps with their summary instead of deltas.
        parts = [getattr(block, "text", None) for block in getattr(event.step, "summary", None) or []]
        return _with(base, thought=" ".join(p for p in parts if p) or None)
    if kind == "error":
        error = getattr(event, "error", None)
        return _with(base, error=f"{getattr(error, 'code', 'error')}: {getattr(error, 'message', '')}")
    return base


def _unknown_raw(model: Any) -> dict[str, Any] | None:
    """The JSON of a model the SDK did not recognise, or None for a known one."""
    raw = getattr(model, "raw", None)
    return raw if getattr(model, "is_unknown", False) is True and isinstance(raw, dict) else None


def _from_raw(raw: dict[str, Any]) -> StreamEvent:
    event_id = raw.get("event_id")
    base = StreamEvent(event_id=str(event_id) if event_id else None, kind=str(raw.get("event_type") or ""))
    if base.kind not in ERROR_EVENTS:
        return base
    error = raw.get("error") if isinstance(raw.get("error"), dict) else {}
    return _with(base, error=f"{(error or {}).get('code', 'error')}: {(error or {}).get('message', '')}")


def _delta_thought(delta: Any) -> Any:
    raw = _unknown_raw(delta)
    if raw is None:
        is_summary = getattr(delta, "type", None) == "thought_summary"
        return getattr(getattr(delta, "content", None), "text", None) if is_summary else None
    if raw.get("type") != "thought":
        return None
    content = raw.get("content")
    return content.get("text") if isinstance(content, dict) else None


def _with(event: StreamEvent, status: Any = None, thought: Any = None, error: Any = None) -> StreamEvent:
    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return replace(event, status=text(status), thought=text(thought), error=text(error))


def _client(settings: Settings, attempts: int) -> genai.Client:
    assert settings.api_key is not None
    options = types.HttpOptions(
        base_url=settings.gemini_base_url,
        timeout=int(settings.request_timeout * 1000),
        retry_options=types.HttpRetryOptions(attempts=attempts, max_delay=SDK_MAX_RETRY_DELAY),
    )
    return genai.Client(api_key=settings.api_key.get_secret_value(), http_options=options)


def _describe(exc: sdk_errors.GeminiNextGenAPIClientError) -> str:
    if isinstance(exc, sdk_errors.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        message = (error or {}).get("message") or exc.response.reason_phrase
        return f"HTTP {exc.status_code}: {message}"
    cause = exc.__cause__
    return f"connection error: {cause or exc}"


def _retry_after(exc: sdk_errors.APIStatusError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _status(exc: sdk_errors.APIStatusError) -> int:
    return int(exc.status_code or exc.response.status_code)


def classify_error(exc: sdk_errors.GeminiNextGenAPIClientError) -> GatewayError:
    """Sort an SDK error for a call that is safe to repeat."""
    if isinstance(exc, sdk_errors.APIStatusError):
        if _status(exc) in (408, 429) or _status(exc) >= 500:
            return RetryableError(_describe(exc), _retry_after(exc))
        return PermanentError(_describe(exc))
    return RetryableError(_describe(exc))


def classify_create_error(exc: sdk_errors.GeminiNextGenAPIClientError) -> GatewayError:
    """Sort an SDK error for a create, where "maybe it worked" must never be retried blindly."""
    if isinstance(exc, sdk_errors.APIStatusError):
        if _status(exc) in NOT_PROCESSED_STATUSES:
            return RetryableError(_describe(exc), _retry_after(exc))
        if _status(exc) < 500 and _status(exc) != 408:
            return PermanentError(_describe(exc))
        return CreateOutcomeUnknown(_describe(exc))
    if type(exc.__cause__).__name__ in NOT_SENT_TRANSPORT_ERRORS:
        return RetryableError(_describe(exc))  # no connection, so nothing was sent
    return CreateOutcomeUnknown(_describe(exc))
