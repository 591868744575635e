"""The real google-genai SDK parses everything the emulator sends into its own types, with no Unknown* parts."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlparse

import pytest
from google.genai import _interactions as gi

from emulator_support import AGENT, EmulatorHandle, assert_known, collect_stream, poll_until, step_count

QUESTION = "Research tidal power in Norway. Compare costs."
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
RESERVED_HOSTS = ("example.com", "example.org", "example.net")
# 1 user_input + 4 thoughts + 2 google_search call/result pairs with the default --thought-steps 4.
STEPS_BEFORE_OUTPUT = 9


def create(client: Any, outcome: str, duration: float = 0.4, **extra: Any) -> Any:
    # Thought summaries only come with "auto" (the documented default is "none").
    extra.setdefault("agent_config", {"type": "deep-research", "thinking_summaries": "auto"})
    return client.interactions.create(
        agent=AGENT,
        input=f"{QUESTION} [[emulator outcome={outcome} duration={duration}]]",
        background=True,
        labels={"job_id": "job-123"},
        **extra,
    )


def output_blocks(it: Any) -> list[Any]:
    return [block for step in it.steps if step.type == "model_output" for block in step.content]


def report_text(it: Any) -> str:
    """All text of the output; the SDK's `output_text` keeps only the text after the last chart."""
    return "".join(block.text for block in output_blocks(it) if block.type == "text")


FINAL = {
    "completed": "completed",
    "failed": "failed",
    "incomplete": "incomplete",
    "budget_exceeded": "budget_exceeded",
    "requires_action": "requires_action",
    "expired": "completed",
}


@pytest.mark.parametrize("outcome", [*FINAL, "stuck", "cancelled"])
def test_every_outcome_parses_strictly(emulator: EmulatorHandle, outcome: str) -> None:
    client = emulator.client()
    created = create(client, "stuck" if outcome == "cancelled" else outcome)
    assert_known(created)
    assert created.status in ("queued", "in_progress")
    assert created.labels == {"job_id": "job-123"}
    if outcome == "cancelled":
        poll_until(lambda: step_count(client.interactions.get(created.id)) > 1, message="a first thought")
        cancelled = client.interactions.cancel(created.id)
        assert_known(cancelled)
        assert cancelled.status == "cancelled"
    if outcome == "stuck":
        final = poll_until(
            lambda: _with_steps(client.interactions.get(created.id), STEPS_BEFORE_OUTPUT),
            message="all thoughts of a stuck interaction",
        )
        assert final.status == "in_progress"
        events = collect_stream(client, created.id, stop_after_index=STEPS_BEFORE_OUTPUT - 1)
    else:
        expected = FINAL.get(outcome, "cancelled")
        final = poll_until(
            lambda: _with_status(client.interactions.get(created.id), expected), message=f"status {expected}"
        )
        events = collect_stream(client, created.id)
    assert_known(final)
    assert_known(events)
    check_resource(final, outcome)
    check_events(events, final, outcome)
    if outcome == "expired":
        poll_until(lambda: _is_gone(client, created.id), timeout=5, message="expiry (404)")


def _with_status(interaction: Any, status: str) -> Any:
    return interaction if interaction.status == status else None


def _with_steps(interaction: Any, count: int) -> Any:
    return interaction if len(interaction.steps or []) >= count else None


def _is_gone(client: Any, interaction_id: str) -> bool:
    try:
        client.interactions.get(interaction_id)
    except gi.NotFoundError:
        return True
    return False


def check_resource(it: Any, outcome: str) -> None:
    assert ISO.match(it.created) and ISO.match(it.updated)
    assert it.agent == AGENT and it.agent_config.type == "deep-research"
    assert it.steps[0].type == "user_input" and QUESTION in it.steps[0].content[0].text
    thoughts = [s.summary[0].text for s in it.steps if s.type == "thought"]
    assert thoughts and len(set(thoughts)) == len(thoughts), "thought summaries differ step by step"
    assert any(s.type == "google_search_call" for s in it.steps)
    outputs = [s for s in it.steps if s.type == "model_output"]
    if outcome in ("completed", "expired"):
        check_report(it)
    elif outcome in ("incomplete", "budget_exceeded"):
        assert "partial" in it.output_text
    elif outcome == "requires_action":
        assert "confirm" in it.output_text
    else:
        assert outputs == []
    if outcome == "failed":
        assert it.errors and it.errors[0].code and it.errors[0].message
    else:
        assert not it.errors
    if outcome == "stuck":
        assert it.usage is None
    else:
        assert it.usage is not None


def check_report(it: Any) -> None:
    text = report_text(it)
    assert text.startswith("# Research tidal power in Norway\n")
    assert "[[emulator" not in text and "emulated" in text
    assert text.count("\n## ") >= 3
    assert any(block.type == "image" for block in output_blocks(it)), "visualization defaults to auto"
    text_blocks = [block for block in output_blocks(it) if block.type == "text"]
    urls = [a.url for block in text_blocks for a in block.annotations or []]
    assert len(urls) > len(set(urls)), "at least one URL is cited twice"
    numbers = {url: i for i, url in enumerate(dict.fromkeys(_sources(text)), start=1)}
    for block in text_blocks:
        for ann in block.annotations or []:
            assert ann.type == "url_citation" and ann.title
            # Offsets are UTF-8 byte offsets into their own text block (SDK urlcitation.py).
            assert block.text.encode()[ann.start_index : ann.end_index] == f"[{numbers[ann.url]}]".encode()
            host = urlparse(ann.url).hostname or ""
            assert host.endswith(RESERVED_HOSTS) or host.endswith(".example")
    usage = it.usage
    for name in (
        "total_input_tokens",
        "total_output_tokens",
        "total_thought_tokens",
        "total_tool_use_tokens",
        "total_cached_tokens",
        "total_tokens",
    ):
        assert isinstance(getattr(usage, name), int), name


def _sources(text: str) -> list[str]:
    return re.findall(r"^\d+\. \[[^\]]*\]\((\S+)\)$", text, flags=re.M)


def check_events(events: list[Any], final: Any, outcome: str) -> None:
    assert [e.event_id for e in events] == [str(i) for i in range(1, len(events) + 1)]
    kinds = [e.event_type for e in events]
    assert kinds[0] == "interaction.created" and kinds[1] == "interaction.status_update"
    assert {"step.start", "step.delta", "step.stop"} <= set(kinds)
    deltas = {type(e.delta).__name__ for e in events if e.event_type == "step.delta"}
    assert "ThoughtSummaryDelta" in deltas
    if outcome == "stuck":
        assert "interaction.completed" not in kinds
        return
    if outcome == "failed":
        assert kinds[-1] == "error" and events[-1].error.code == final.errors[0].code
        return
    assert kinds[-1] == "interaction.completed"
    assert events[-1].interaction.status == final.status
    assert events[-2].event_type == "interaction.status_update" and events[-2].status == final.status
    if final.output_text:
        text = "".join(e.delta.text for e in events if e.event_type == "step.delta" and e.delta.type == "text")
        assert text == report_text(final)


def test_model_interaction_answers_at_once(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = client.interactions.create(model="gemini-2.5-flash", input="What is a TPU?")
    assert_known(it)
    assert it.output_text is not None and it.usage is not None and it.usage.total_tokens is not None
    assert it.status == "completed" and "emulated" in it.output_text and it.usage.total_tokens > 0


@pytest.mark.parametrize(
    "value",
    [
        [{"type": "text", "text": "Research solar sails."}],
        [{"type": "user_input", "content": [{"type": "text", "text": "Research solar sails."}]}],
    ],
)
def test_structured_input_is_reduced_to_text(emulator: EmulatorHandle, value: Any) -> None:
    it = emulator.client().interactions.create(agent=AGENT, input=value, background=True)
    assert_known(it)
    assert emulator.stats()["creates_by_input"] == {"Research solar sails.": 1}


def test_v1beta_prefix_and_raw_shape(emulator: EmulatorHandle) -> None:
    it = create(emulator.client(), "completed", duration=0)
    raw = _raw_get(emulator, f"/v1beta/interactions/{it.id}")
    assert raw["object"] == "interaction" and raw["status"] == "completed"
    assert {"id", "agent", "agent_config", "created", "updated", "labels", "steps", "usage"} <= set(raw)


def _raw_get(emulator: EmulatorHandle, path: str, key: str | None = "test-key") -> dict[str, Any]:
    headers = {"x-goog-api-key": key} if key else {}
    request = urllib.request.Request(emulator.url + path, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def test_cancel_delete_and_not_found(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    done = create(client, "completed", duration=0)
    with pytest.raises(gi.BadRequestError):
        client.interactions.cancel(done.id)
    assert client.interactions.delete(done.id) is None
    for call in (client.interactions.get, client.interactions.delete, client.interactions.cancel):
        with pytest.raises(gi.NotFoundError) as info:
            call(done.id)
        assert cast(dict[str, Any], info.value.body)["error"]["code"] == "not_found"


# ---- every error status maps onto the SDK's own exception class -------------------------------------

FAULT_CLASSES = {
    "429": gi.RateLimitError,
    "500": gi.InternalServerError,
    "503": gi.InternalServerError,
    "drop": gi.APIConnectionError,
    "reset": gi.APIConnectionError,
}


@pytest.mark.parametrize("endpoint", ["get", "stream", "create", "cancel", "delete"])
@pytest.mark.parametrize("kind", list(FAULT_CLASSES))
def test_faults_raise_sdk_exceptions(emulator: EmulatorHandle, endpoint: str, kind: str) -> None:
    client = emulator.client()
    it = create(client, "stuck")
    emulator.set_faults({endpoint: {kind: 1.0}})
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: client.interactions.get(it.id),
        "stream": lambda: collect_stream(client, it.id, stop_after_index=1),
        "create": lambda: create(client, "completed"),
        "cancel": lambda: client.interactions.cancel(it.id),
        "delete": lambda: client.interactions.delete(it.id),
    }
    with pytest.raises(FAULT_CLASSES[kind]) as info:
        calls[endpoint]()
    if kind == "429":
        assert isinstance(info.value, gi.RateLimitError)
        assert info.value.response.headers["retry-after"] == "1"
    assert emulator.stats()["requests"][endpoint].get("dropped" if kind in ("drop", "reset") else kind) == 1
    emulator.set_faults({})
    assert client.interactions.get(it.id).status in ("queued", "in_progress")


def test_bad_request_and_auth_errors(emulator: EmulatorHandle, start_emulator: Any) -> None:
    with pytest.raises(gi.BadRequestError) as info:
        emulator.client().interactions.create(agent="deep-research-nope", input="x", background=True)
    assert cast(dict[str, Any], info.value.body)["error"]["code"] == "invalid_request"
    secured = start_emulator("--api-key", "right-key-123")
    with pytest.raises(gi.AuthenticationError) as auth:
        secured.client(api_key="wrong-key-456").interactions.get("v1_x")
    assert cast(dict[str, Any], auth.value.body)["error"]["code"] == "unauthenticated"
    assert "wrong-key-456" not in json.dumps(auth.value.body) and "right-key-123" not in json.dumps(auth.value.body)
    with pytest.raises(urllib.error.HTTPError) as missing:
        _raw_get(secured, "/v1/interactions/v1_x", key=None)
    assert missing.value.code == 401
    it = create(secured.client(api_key="right-key-123"), "completed", duration=0)
    assert it.status == "completed"
    assert "right-key-123" not in secured.stderr() and "wrong-key-456" not in secured.stderr()
