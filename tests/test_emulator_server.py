"""`run_in_thread` (used by `research run --emulator`) and the in-process Python API."""

from __future__ import annotations

import socket
from typing import Final

import httpx2
import pytest
from google import genai

from research_emulator import EmulatorSettings, SettingsError, create_app, run_in_thread
from research_emulator.server import IDLE_CONNECTION_SECONDS, make_server

AGENT: Final = "deep-research-preview-04-2026"


def test_run_in_thread_serves_and_stops() -> None:
    settings = EmulatorSettings(port=0, seed=5, duration_min=0, duration_max=0)
    with run_in_thread(settings) as emulator:
        assert emulator.url.startswith("http://127.0.0.1:")
        client = genai.Client(api_key="k", http_options={"base_url": emulator.url})
        it = client.interactions.create(agent=AGENT, input="Research ice cores.", background=True)
        assert it.id is not None
        assert client.interactions.get(it.id).status == "completed"
        stream = client.interactions.create(
            agent=AGENT, input="Q [[emulator outcome=stuck duration=0]]", background=True
        )
        assert stream.id is not None
        # An open stream of a stuck interaction must not block shutdown.
        events = client.interactions.get(stream.id, stream=True)
        assert next(iter(events)).event_type == "interaction.created"
        client.close()
    port = int(emulator.url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_run_in_thread_port_in_use() -> None:
    with run_in_thread(EmulatorSettings(port=0)) as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(SettingsError, match="already in use"):
            run_in_thread(EmulatorSettings(port=port))


def test_settings_validate_and_create_app() -> None:
    settings = EmulatorSettings(faults=["get:429=0.2", "all:503=0.1"], outcome_rates="failed=0.25")
    assert settings.faults["get"] == {"429": 0.2, "503": 0.1} and settings.faults["delete"] == {"503": 0.1}
    assert settings.outcome_rates == {"failed": 0.25}
    assert "secret" not in repr(EmulatorSettings(api_key="secret"))
    with pytest.raises(ValueError):
        EmulatorSettings(faults={"get": {"lost": 0.1}})
    assert create_app(settings).routes


def test_an_idle_connection_outlives_the_sdk_clients_keep_alive() -> None:
    # Google's front ends keep an idle client connection 610 s. At uvicorn's default (5 s, the SDK pool's
    # own expiry) the emulator could close a pooled connection just as a request went out on it.
    config = make_server(EmulatorSettings(port=0)).config
    assert config.timeout_keep_alive == IDLE_CONNECTION_SECONDS == 610
    expiry = httpx2.Limits().keepalive_expiry
    assert expiry is not None and config.timeout_keep_alive > 10 * expiry
