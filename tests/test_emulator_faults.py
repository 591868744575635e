"""Seeded outcomes and faults, the lost-create trap, and runtime fault control."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, cast

import pytest
from google.genai import _interactions as gi

from emulator_support import AGENT, EmulatorHandle, poll_until

SEEDED_FLAGS = (
    "--outcome-rate",
    "failed=0.3,incomplete=0.2,stuck=0.1",
    "--duration",
    "0.05:0.3",
    "--fault",
    "get:429=0.25",
    "--fault",
    "get:503=0.15",
    "--fault",
    "get:slow=0.05",
    "--slow-delay",
    "0.01",
)


def raw_status(emulator: EmulatorHandle, path: str) -> str:
    request = urllib.request.Request(emulator.url + path, headers={"x-goog-api-key": "k"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)


def run_sequence(emulator: EmulatorHandle) -> dict[str, Any]:
    """The same request sequence against a fresh emulator; returns everything the seed decides."""
    client = emulator.client()
    # cast: the SDK types Interaction.id as optional; the emulator always sets it.
    ids = [
        cast(str, client.interactions.create(agent=AGENT, input=f"Question {i}", background=True).id) for i in range(8)
    ]
    directed = client.interactions.create(
        agent=AGENT, input="Pinned [[emulator outcome=failed duration=0.1]]", background=True
    )
    assert directed.id is not None
    decided = [emulator.describe(i) for i in [*ids, directed.id]]
    codes = [raw_status(emulator, f"/v1/interactions/{ids[n % len(ids)]}") for n in range(40)]
    return {
        "ids": ids,
        "outcomes": [(d["outcome"], d["duration"]) for d in decided],
        "codes": codes,
        "stats": {k: v for k, v in emulator.stats().items() if k != "status_counts"},
    }


def test_same_seed_same_results_other_seed_differs(start_emulator: Any) -> None:
    first = run_sequence(start_emulator(*SEEDED_FLAGS))
    second = run_sequence(start_emulator(*SEEDED_FLAGS))
    other = run_sequence(start_emulator(*SEEDED_FLAGS, "--seed", "8"))
    # Ids are unique per process (two emulators must never hand out the same id); the rest is seeded.
    assert not set(first.pop("ids")) & set(second.pop("ids"))
    assert first == second
    assert first["outcomes"][-1] == ("failed", 0.1)  # a directive wins over the drawn outcome
    assert {o for o, _ in first["outcomes"]} - {"completed"}, "rates produce other outcomes"
    assert {"429", "503", "200"} <= set(first["codes"])
    assert other["outcomes"] != first["outcomes"]
    assert other["codes"] != first["codes"]


def test_reset_replays_outcomes_and_faults(emulator: EmulatorHandle) -> None:
    emulator.set_faults({"get": {"429": 0.5}})
    before = run_sequence(emulator)
    emulator.reset()
    emulator.set_faults({"get": {"429": 0.5}})
    after = run_sequence(emulator)
    assert before["outcomes"] == after["outcomes"] and before["codes"] == after["codes"]
    assert before["ids"] != after["ids"], "ids stay unique for the life of the process"


def test_lost_create_flag_still_creates_the_interaction(start_emulator: Any) -> None:
    emulator = start_emulator("--fault", "create:lost=1.0")
    with pytest.raises(gi.APIConnectionError):
        emulator.client().interactions.create(agent=AGENT, input="The lost one", background=True)
    stats = emulator.stats()
    assert stats["interactions_created"] == 1
    assert stats["creates_by_input"] == {"The lost one": 1}
    assert stats["requests"]["create"] == {"dropped": 1}
    assert sum(stats["status_counts"].values()) == 1


@pytest.mark.parametrize(
    ("kind", "error"), [("lost_reset", gi.APIConnectionError), ("lost_500", gi.InternalServerError)]
)
def test_other_lost_kinds(emulator: EmulatorHandle, kind: str, error: type) -> None:
    emulator.set_faults({"create": {kind: 1.0}})
    with pytest.raises(error):
        emulator.client().interactions.create(agent=AGENT, input="The lost one", background=True)
    stats = emulator.stats()
    assert stats["interactions_created"] == 1 and stats["creates_by_input"] == {"The lost one": 1}
    assert stats["requests"]["create"] == {"500" if kind == "lost_500" else "dropped": 1}


def test_sdk_retries_turn_a_lost_create_into_several_jobs(emulator: EmulatorHandle) -> None:
    """The trap: the SDK retries POST create on 5xx, so one call whose responses are lost starts 3 jobs."""
    emulator.set_faults({"create": {"lost_500": 1.0}})
    client = emulator.client(attempts=3, initial_delay=0.05, max_delay=0.1)
    with pytest.raises(gi.InternalServerError):
        client.interactions.create(agent=AGENT, input="Retried", background=True)
    assert emulator.stats()["creates_by_input"] == {"Retried": 3}


def test_sdk_does_not_retry_dropped_connections(emulator: EmulatorHandle) -> None:
    """Measured in google-genai 3.6.1: a close or reset without response is raised at once."""
    emulator.set_faults({"create": {"lost": 0.5, "lost_reset": 0.5}})
    client = emulator.client(attempts=3, initial_delay=0.05, max_delay=0.1)
    for n in range(4):
        with pytest.raises(gi.APIConnectionError):
            client.interactions.create(agent=AGENT, input=f"Dropped {n}", background=True)
    assert emulator.stats()["creates_by_input"] == {f"Dropped {n}": 1 for n in range(4)}
    assert set(emulator.stats()["faults_injected"]) == {"create:lost", "create:lost_reset"}


def test_runtime_faults_switch_on_and_off(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = client.interactions.create(agent=AGENT, input="Toggle", background=True)
    interaction_id = it.id
    assert interaction_id is not None
    emulator.set_faults({"all": {"503": 1.0}, "retry_after": 3})
    call: Callable[[], object]
    for call in (lambda: client.interactions.get(interaction_id), lambda: client.interactions.cancel(interaction_id)):
        with pytest.raises(gi.InternalServerError):
            call()
    emulator.set_faults({"get": {"429": 1.0}})
    with pytest.raises(gi.RateLimitError) as info:
        client.interactions.get(interaction_id)
    assert info.value.response.headers["retry-after"] == "3"
    emulator.set_faults({})
    assert client.interactions.get(interaction_id).id == interaction_id
    poll_until(lambda: emulator.stats()["requests"]["get"].get("200") == 1, message="counted 200")


def test_bad_runtime_fault_config_is_rejected(emulator: EmulatorHandle) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        emulator.set_faults({"get": {"418": 0.5}})
    assert info.value.code == 400
    with pytest.raises(urllib.error.HTTPError):
        emulator.set_faults({"get": {"cut": 0.5}})


def test_reset_restores_fault_knobs_set_at_runtime(emulator: EmulatorHandle) -> None:
    started = emulator.set_faults({})
    changed = emulator.set_faults({"get": {"429": 1.0}, "retry_after": 7, "slow_delay": 3})
    assert (changed["retry_after"], changed["slow_delay"]) == (7, 3)
    emulator.reset()
    assert emulator.set_faults({}) == started
