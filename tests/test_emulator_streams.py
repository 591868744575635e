"""SSE streams: they follow the clock, and `last_event_id=E` resumes exactly after event E."""

from __future__ import annotations

import time
from typing import Any

import pytest
from google.genai import _interactions as gi

from emulator_support import AGENT, EmulatorHandle, collect_stream, poll_until, step_count


def dumped(events: list[Any]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json", by_alias=True) for e in events]


def start(client: Any, duration: float = 1.0) -> Any:
    return client.interactions.create(
        agent=AGENT, input=f"Research kelp farming. [[emulator duration={duration}]]", background=True
    )


def test_client_dropped_stream_resumes_exactly_after_last_event(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = start(client)
    first: list[Any] = []
    stream = client.interactions.get(it.id, stream=True)
    for event in stream:
        first.append(event)
        if len(first) == 6:
            break
    stream.close()  # type: ignore[no-untyped-call]  # the client goes away mid-run; SDK's Stream.close is unannotated
    resumed = collect_stream(client, it.id, last_event_id=first[-1].event_id)
    full = collect_stream(client, it.id)
    assert full[-1].event_type == "interaction.completed"
    assert dumped(first + resumed) == dumped(full)
    assert resumed[0].event_id == "7"


def test_server_cut_stream_resumes_exactly(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = start(client, duration=0.6)
    emulator.set_faults({"stream": {"cut": 1.0}})
    received: list[Any] = []
    # A cut arrives as APIConnectionError in the middle of iteration, not when the stream is opened.
    with pytest.raises(gi.APIConnectionError):
        for event in client.interactions.get(it.id, stream=True):
            received.append(event)
    assert 1 <= len(received) <= 4
    emulator.set_faults({})
    resumed = collect_stream(client, it.id, last_event_id=received[-1].event_id)
    assert dumped(received + resumed) == dumped(collect_stream(client, it.id))


def test_stream_follows_the_clock(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = start(client, duration=1.0)
    arrivals: list[tuple[float, str]] = []
    began = time.monotonic()
    for event in client.interactions.get(it.id, stream=True):
        arrivals.append((time.monotonic() - began, event.event_type))
    assert arrivals[-1][1] == "interaction.completed"
    # Events arrive as they become due, so the stream spans (roughly) the interaction's duration.
    assert arrivals[-1][0] >= 0.8
    assert arrivals[0][0] < 0.5


def test_resume_after_the_end_yields_nothing(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = start(client, duration=0)
    full = collect_stream(client, it.id)
    assert collect_stream(client, it.id, last_event_id=full[-1].event_id) == []
    with pytest.raises(gi.BadRequestError):
        collect_stream(client, it.id, last_event_id="not-an-id")


def test_cancel_ends_an_open_stream(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = client.interactions.create(
        agent=AGENT, input="Research kelp. [[emulator outcome=stuck duration=0.2]]", background=True
    )
    interaction_id = it.id
    assert interaction_id is not None
    poll_until(lambda: step_count(client.interactions.get(interaction_id)) > 3, message="thoughts")
    stream = client.interactions.get(interaction_id, stream=True)
    seen = [next(iter(stream))]
    client.interactions.cancel(interaction_id)
    seen += list(stream)
    assert seen[-1].event_type == "interaction.completed" and seen[-1].interaction.status == "cancelled"
    assert dumped(seen) == dumped(collect_stream(client, interaction_id))


def test_an_unknown_status_does_not_end_the_stream(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = client.interactions.create(
        agent=AGENT, input="Research kelp. [[emulator outcome=unknown_status duration=0.3]]", background=True
    )
    interaction_id = it.id
    assert interaction_id is not None
    poll_until(
        lambda: client.interactions.with_raw_response.get(interaction_id).json()["status"] == "paused",
        message="the unknown status",
    )
    client.interactions.cancel(interaction_id)  # the stream below would stay open without it
    events = dumped(collect_stream(client, interaction_id))
    statuses = [e.get("status") for e in events if e["event_type"] == "interaction.status_update"]
    assert statuses == ["in_progress", "paused", "cancelled"]
    assert events[-1]["event_type"] == "interaction.completed" and events[-1]["interaction"]["status"] == "cancelled"
