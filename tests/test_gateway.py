"""The gateway over the real google-genai SDK and the emulator: what reaches the API, and the SDK speed-ups."""

from __future__ import annotations

from typing import Any

import pytest
from google.genai._gaos import utils as sdk_utils
from google.genai._gaos.utils import queryparams, serializers, url

from research_runner.gateway import Gateway
from research_runner.sdk_speedups import (
    create_request,
    install_sdk_speedups,
    keep_sdk_lazy_names,
    reuse_sdk_model_classes,
)

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
    assert installed.reuses_classes and installed.__module__ == "research_runner.sdk_speedups"


def test_every_speed_up_applies_to_the_pinned_sdk() -> None:
    # Fails when a google-genai release changes the shape a speed-up relies on: re-measure gateway_cost.py then.
    assert install_sdk_speedups() and install_sdk_speedups()


def test_the_sdk_keeps_its_lazily_loaded_names(
    runner_env: dict[str, str], emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = Gateway(settings_from(runner_env, monkeypatch))
    assert keep_sdk_lazy_names() > 0
    monkeypatch.delitem(vars(sdk_utils), "generate_url", raising=False)  # as a fresh process has it: not loaded yet

    interaction_id = gateway.create("a question [[emulator duration=30]]", AGENT, "job-lazy")
    assert gateway.get(interaction_id).status in ("queued", "in_progress")

    assert vars(sdk_utils)["generate_url"] is url.generate_url  # kept in the package after its first use
    assert getattr(vars(sdk_utils)["__getattr__"], "keeps_names", False)
    with pytest.raises(AttributeError):
        sdk_utils.no_such_name  # noqa: B018 (an unknown name still fails, and is not stored)
    assert "no_such_name" not in vars(sdk_utils)


def test_the_sdk_reads_each_request_type_s_hints_once() -> None:
    assert install_sdk_speedups()

    class Request:
        id: str

    read_url, read_query = getattr(url, "get_type_hints"), getattr(queryparams, "get_type_hints")  # noqa: B009
    first = read_url(Request)
    first["id"] = int  # a caller that changes its copy
    assert read_url(Request) == {"id": str} == read_query(Request)
    assert getattr(read_url, "keeps_hints", False) and getattr(read_query, "keeps_hints", False)


CREATE_BODIES = [
    {"agent": AGENT, "input": "A question", "background": True, "labels": {"research_runner_job": "j1"}},
    {
        "agent": AGENT,
        "input": [
            {"type": "text", "text": "A chart?"},
            {"type": "image", "data": "iVBORw0K", "mime_type": "image/png"},
        ],
        "background": True,
        "labels": {"research_runner_job": "j2"},
        "agent_config": {"type": "deep-research", "collaborative_planning": True, "thinking_summaries": "auto"},
        "previous_interaction_id": "v1_earlier",
        "webhook_config": {"uris": ["https://example.test/hook"], "user_metadata": {"research_runner_job": "j2"}},
    },
]


@pytest.mark.parametrize("body", CREATE_BODIES)
def test_a_create_request_built_in_one_step_is_the_one_the_sdk_builds(body: dict[str, Any]) -> None:
    install_sdk_speedups()
    built = create_request(body)
    assert built is not None, "google-genai has no CreateInteractionRequest: re-measure benchmarks/gateway_cost.py"
    from_kwargs = sdk_utils.unmarshal({"body": dict(body)}, type(built))  # what create(**body) validates
    assert built == from_kwargs
    assert built.model_dump_json(by_alias=True) == from_kwargs.model_dump_json(by_alias=True)
