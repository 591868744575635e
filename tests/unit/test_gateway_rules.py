"""The gateway's pure rules, fed the SDK's own objects: how errors are sorted, how stream events are read.

A create whose outcome is unknown must never be retried blindly (a second paid job); one that surely did nothing
may be. Errors are built as the SDK builds them (`APIError.generate` from an httpx response; transport errors
wrapping the httpx exception as their cause), stream events are validated with the SDK's own event union.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx  # the HTTP client google-genai 3.6 runs on
import pytest
from google.genai import _interactions as sdk_errors
from google.genai._gaos.types.interactions import InteractionSSEEvent
from google.genai._gaos.utils.serializers import ALLOW_UNKNOWN_UNION_VARIANTS
from pydantic import TypeAdapter

from research_runner.exceptions import CreateOutcomeUnknown, GatewayError, PermanentError, RetryableError
from research_runner.gateway import StreamEvent, classify_create_error, classify_error, stream_event

REQUEST = httpx.Request("POST", "https://generativelanguage.googleapis.com/v1beta/interactions")
EVENTS: TypeAdapter[Any] = TypeAdapter(InteractionSSEEvent)


def status_error(status: int, headers: dict[str, str] | None = None) -> sdk_errors.APIStatusError:
    body = {"error": {"code": "some_code", "message": f"server said {status}"}}
    response = httpx.Response(status, json=body, headers=headers, request=REQUEST)
    error = sdk_errors.APIError.generate(status, body, None, response)
    assert isinstance(error, sdk_errors.APIStatusError)
    return error


def connection_error(cause: BaseException) -> sdk_errors.APIConnectionError:
    """As the SDK wraps an httpx failure: timeouts become APITimeoutError, the rest APIConnectionError."""
    error: sdk_errors.APIConnectionError
    if isinstance(cause, httpx.TimeoutException):
        error = sdk_errors.APITimeoutError(request=REQUEST)
    else:
        error = sdk_errors.APIConnectionError(message=str(cause), request=REQUEST)
    error.__cause__ = cause
    return error


STATUS_CASES = [
    # status, class the SDK picks, create's verdict, a repeatable call's verdict
    (400, sdk_errors.BadRequestError, PermanentError, PermanentError),
    (401, sdk_errors.AuthenticationError, PermanentError, PermanentError),
    (403, sdk_errors.PermissionDeniedError, PermanentError, PermanentError),
    (404, sdk_errors.NotFoundError, PermanentError, PermanentError),
    (408, sdk_errors.APIStatusError, CreateOutcomeUnknown, RetryableError),
    (409, sdk_errors.ConflictError, PermanentError, PermanentError),
    (422, sdk_errors.UnprocessableEntityError, PermanentError, PermanentError),
    (429, sdk_errors.RateLimitError, RetryableError, RetryableError),
    (500, sdk_errors.InternalServerError, CreateOutcomeUnknown, RetryableError),
    (502, sdk_errors.InternalServerError, CreateOutcomeUnknown, RetryableError),
    (503, sdk_errors.InternalServerError, CreateOutcomeUnknown, RetryableError),
    (504, sdk_errors.InternalServerError, CreateOutcomeUnknown, RetryableError),
]


@pytest.mark.parametrize(("status", "sdk_class", "on_create", "on_read"), STATUS_CASES)
def test_status_errors_are_sorted(
    status: int, sdk_class: type[Exception], on_create: type[GatewayError], on_read: type[GatewayError]
) -> None:
    error = status_error(status)
    assert isinstance(error, sdk_class)
    create, read = classify_create_error(error), classify_error(error)
    assert type(create) is on_create
    assert type(read) is on_read
    assert str(create) == str(read) == f"HTTP {status}: server said {status}"


TRANSPORT_CASES = [
    # The connection never opened: nothing reached Google, a create may be sent again.
    (httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST), RetryableError),
    (httpx.ConnectTimeout("timed out connecting", request=REQUEST), RetryableError),
    # The request may have been received and acted on: a create's outcome is unknown.
    (httpx.ReadTimeout("timed out reading", request=REQUEST), CreateOutcomeUnknown),
    (httpx.WriteTimeout("timed out writing", request=REQUEST), CreateOutcomeUnknown),
    (httpx.RemoteProtocolError("peer closed connection", request=REQUEST), CreateOutcomeUnknown),
    (httpx.ReadError("connection reset by peer", request=REQUEST), CreateOutcomeUnknown),
    (httpx.PoolTimeout("no connection free", request=REQUEST), CreateOutcomeUnknown),
]


@pytest.mark.parametrize(("cause", "on_create"), TRANSPORT_CASES, ids=lambda c: type(c).__name__)
def test_transport_errors_retry_a_create_only_when_nothing_was_sent(
    cause: BaseException, on_create: type[GatewayError]
) -> None:
    error = connection_error(cause)
    assert type(classify_create_error(error)) is on_create
    read = classify_error(error)
    assert type(read) is RetryableError  # reads and cancels are safe to repeat whatever happened
    assert str(read) == f"connection error: {cause}"


def test_connection_error_without_a_cause_is_not_retried_on_create() -> None:
    error = sdk_errors.APIConnectionError(message="No response received.", request=REQUEST)
    assert type(classify_create_error(error)) is CreateOutcomeUnknown
    assert type(classify_error(error)) is RetryableError


@pytest.mark.parametrize(
    ("headers", "retry_after"), [({"retry-after": "17"}, 17.0), ({"retry-after": "soon"}, None), ({}, None)]
)
def test_rate_limits_carry_retry_after(headers: dict[str, str], retry_after: float | None) -> None:
    for classify in (classify_create_error, classify_error):
        verdict = classify(status_error(429, headers))
        assert isinstance(verdict, RetryableError)
        assert verdict.retry_after == retry_after


def test_message_falls_back_to_the_reason_phrase() -> None:
    response = httpx.Response(503, text="upstream down", request=REQUEST)
    error = sdk_errors.APIError.generate(503, "upstream down", None, response)
    assert isinstance(error, sdk_errors.APIStatusError)
    assert str(classify_error(error)) == "HTTP 503: Service Unavailable"


def event(data: dict[str, Any]) -> Any:
    """The model the SDK's stream yields for this JSON (server responses may hold unknown variants)."""
    return EVENTS.validate_python(data, context={ALLOW_UNKNOWN_UNION_VARIANTS: True})


def thought_delta(kind: str, text: str) -> dict[str, Any]:
    return {
        "event_type": "step.delta",
        "event_id": "e3",
        "index": 1,
        "delta": {"type": kind, "content": {"type": "text", "text": text}},
    }


ERROR_BODY = {"code": "internal", "message": "the agent failed"}
STREAM_CASES = [
    (
        {"event_type": "interaction.created", "event_id": "e1", "interaction": {"id": "i1", "status": "in_progress"}},
        StreamEvent("e1", "interaction.created", status="in_progress"),
    ),
    (
        {"event_type": "interaction.status_update", "event_id": "e2", "interaction_id": "i1", "status": "queued"},
        StreamEvent("e2", "interaction.status_update", status="queued"),
    ),
    (thought_delta("thought_summary", "Reading sources"), StreamEvent("e3", "step.delta", thought="Reading sources")),
    # Google's docs table names the delta `thought`; the SDK keeps it as an Unknown delta.
    (thought_delta("thought", "Comparing studies"), StreamEvent("e3", "step.delta", thought="Comparing studies")),
    (
        {"event_type": "step.delta", "event_id": "e4", "index": 2, "delta": {"type": "text", "text": "# Report"}},
        StreamEvent("e4", "step.delta"),
    ),
    (
        {
            "event_type": "step.start",
            "event_id": "e5",
            "index": 0,
            "step": {
                "type": "thought",
                "summary": [{"type": "text", "text": "Plan"}, {"type": "text", "text": "first"}],
            },
        },
        StreamEvent("e5", "step.start", thought="Plan first"),
    ),
    (
        {"event_type": "interaction.completed", "event_id": "e6", "interaction": {"id": "i1", "status": "completed"}},
        StreamEvent("e6", "interaction.completed", status="completed"),
    ),
    (
        {"event_type": "error", "event_id": "e7", "error": ERROR_BODY},
        StreamEvent("e7", "error", error="internal: the agent failed"),
    ),
    # The docs' name for the error event, an Unknown event to the SDK.
    (
        {"event_type": "interaction.error", "event_id": "e8", "error": ERROR_BODY},
        StreamEvent("e8", "interaction.error", error="internal: the agent failed"),
    ),
    ({"event_type": "interaction.something_new", "event_id": "e9"}, StreamEvent("e9", "interaction.something_new")),
]


@pytest.mark.parametrize(
    ("data", "expected"), STREAM_CASES, ids=lambda v: v.get("event_type", "") if isinstance(v, dict) else ""
)
def test_stream_events_are_read(data: dict[str, Any], expected: StreamEvent) -> None:
    assert stream_event(event(data)) == expected


@pytest.mark.parametrize(
    ("data", "terminal"),
    [
        ({"event_type": "interaction.status_update", "interaction_id": "i", "status": "in_progress"}, False),
        ({"event_type": "interaction.status_update", "interaction_id": "i", "status": "failed"}, True),
        ({"event_type": "interaction.completed", "interaction": {"id": "i", "status": "completed"}}, True),
        ({"event_type": "error", "error": ERROR_BODY}, True),
        ({"event_type": "interaction.error", "error": ERROR_BODY}, True),
        (thought_delta("thought", "still going"), False),
        ({"event_type": "interaction.something_new"}, False),
    ],
)
def test_which_events_end_a_stream(data: dict[str, Any], terminal: bool) -> None:
    assert stream_event(event(data)).terminal is terminal
