"""The gateway over the real google-genai SDK and the emulator: what reaches the API, and the SDK speed-up."""

from __future__ import annotations

from typing import Any

import pytest
from google.genai._gaos.utils import serializers

from research_runner.gateway import Gateway, reuse_sdk_model_classes

from conftest import settings_from

AGENT = "deep-research-pro-preview-12-2025"


def _stored(emulator: Any, interaction_id: str) -> dict[str, Any]:
    client = emulator.client()
    raw = client.interactions.with_raw_response.get(interaction_id, include_input=True)
    return dict(raw.json())


def test_the_sdk_builds_each_serialiser_class_once(
    runner_env: dict[str, str], emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = Gateway(settings_from(runner_env, monkeypatch))
    assert reuse_sdk_model_classes(), "google-genai's serialisers changed shape: re-measure benchmarks/gateway_cost.py"
    classes = getattr(serializers, "create_model").classes  # noqa: B009 (the SDK does not export it)

    first = gateway.create("first question [[emulator duration=30]]", AGENT, "job-one")
    built = len(classes)
    second = gateway.create("second question [[emulator outcome=failed duration=0]]", AGENT, "job-two")
    assert gateway.get(second).status in ("in_progress", "failed")

    assert built > 0 and len(classes) == built  # nothing new was built for the second create
    one, two = _stored(emulator, first), _stored(emulator, second)
    assert (one["labels"], two["labels"]) == ({"research_runner_job": "job-one"}, {"research_runner_job": "job-two"})
    assert "first question" in str(one["input"]) and "second question" in str(two["input"])
    assert (one["agent"], two["agent"]) == (AGENT, AGENT)
    assert emulator.describe(second)["outcome"] == "failed" and emulator.describe(first)["outcome"] == "completed"


def test_reusing_classes_is_installed_once() -> None:
    assert reuse_sdk_model_classes() and reuse_sdk_model_classes()
    installed = getattr(serializers, "create_model")  # noqa: B009 (the SDK does not export it)
    assert installed.reuses_classes and installed.__module__ == "research_runner.gateway"
