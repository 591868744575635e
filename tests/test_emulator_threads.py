"""Multi-turn flows and non-text input through the real SDK: planning, follow-ups, attachments, limits."""

from __future__ import annotations

import base64
import re
from typing import Any, cast

import pytest
from google.genai import _interactions as gi
from google.genai.interactions import Interaction

from research_emulator.charts import bar_chart

from emulator_support import AGENT, EmulatorHandle, assert_known, poll_until

PLANNING = {"type": "deep-research", "collaborative_planning": True}
FOLLOW_UP_MODEL = "gemini-3.1-pro-preview"  # the model Google's docs continue a deep research with
PLAN_STEP = re.compile(r"^(\d+)\. (.+)$", re.MULTILINE)
PDF = (
    b"%PDF-1.4\n1 0 obj << /Title (Tidal survey 2024) >> endobj\n"
    b"2 0 obj << /Type /Pages /Count 2 >> endobj\n3 0 obj << /Type /Page >> endobj\n"
    b"4 0 obj << /Type /Page >> endobj\n%%EOF\n"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def finish(client: Any, created: Any) -> Any:
    it = poll_until(lambda: _ended(client.interactions.get(created.id)), message=f"interaction {created.id} to end")
    assert_known(it)
    assert it.status == "completed"
    return it


def _ended(it: Any) -> Any:
    return it if it.status not in ("queued", "in_progress") else None


def turn(client: Any, text: Any, previous: str | None = None, **extra: Any) -> Any:
    created = client.interactions.create(
        agent=AGENT, input=text, background=True, previous_interaction_id=previous, **extra
    )
    return finish(client, created)


def full_text(it: Any) -> str:
    return "".join(b.text for s in it.steps if s.type == "model_output" for b in s.content if b.type == "text")


def plan_steps(it: Any) -> list[str]:
    steps = PLAN_STEP.findall(full_text(it))
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1))
    return [step for _, step in steps]


# ---- collaborative planning -----------------------------------------------------------------------------


def test_plan_revise_confirm_report(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    question = "Research Google TPUs. [[emulator duration=0.2]]"
    plan = turn(client, question, agent_config=PLANNING)
    first_steps = plan_steps(plan)
    assert full_text(plan).startswith("# Research plan: Research Google TPUs\n") and len(first_steps) >= 3
    assert not any(b.type == "image" for s in plan.steps if s.type == "model_output" for b in s.content)

    change = "Focus more on competitor hardware, less on history."
    revised = turn(client, change, previous=plan.id, agent_config=PLANNING)
    assert revised.previous_interaction_id == plan.id
    assert plan_steps(revised) == [*first_steps, f"Requested change: {change}"]

    report = turn(client, "Plan looks good!", previous=revised.id)
    text = full_text(report)
    assert text.startswith("# Research Google TPUs\n"), "the report researches the planned question"
    assert "## Sources" in text and "Plan looks good" not in text.split("\n")[0]
    for step in plan_steps(revised):
        assert step in text, step
    assert f'"{change}"' in text


def test_confirming_while_still_planning_keeps_the_plan(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    plan = turn(client, "Research kelp farming. [[emulator duration=0]]", agent_config=PLANNING)
    again = turn(client, "Yes, looks good.", previous=plan.id, agent_config=PLANNING)
    assert plan_steps(again) == plan_steps(plan)


# ---- follow-ups -----------------------------------------------------------------------------------------


def sources_of(text: str) -> list[str]:
    return re.findall(r"^\d+\. \[[^\]]*\]\((\S+)\)$", text, flags=re.MULTILINE)


def test_two_deep_model_follow_up_thread(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    report = turn(client, "Research tidal power in Norway. [[emulator duration=0]]")
    urls = sources_of(full_text(report))
    first = client.interactions.create(
        model=FOLLOW_UP_MODEL, input="Which costs matter most?", previous_interaction_id=report.id
    )
    assert isinstance(first, Interaction)
    second = client.interactions.create(
        model=FOLLOW_UP_MODEL, input="And the main risks?", previous_interaction_id=first.id
    )
    assert isinstance(second, Interaction)
    for answer in (finish(client, first), finish(client, second)):
        assert answer.previous_interaction_id in (report.id, first.id)
        assert '"Research tidal power in Norway"' in answer.output_text
        assert all(url in answer.output_text for url in urls)
    assert "Which costs matter most?" in finish(client, second).output_text


def test_agent_follow_up_builds_on_the_report(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    report = turn(client, "Research tidal power in Norway. [[emulator duration=0]]")
    earlier = sources_of(full_text(report))
    follow = turn(client, "Now compare with Scotland. [[emulator duration=0]]", previous=report.id)
    text = full_text(follow)
    assert text.startswith("# Follow-up: Now compare with Scotland\n")
    assert '"Research tidal power in Norway"' in text
    cited = {
        a.url
        for s in follow.steps
        if s.type == "model_output"
        for b in s.content
        if b.type == "text"
        for a in b.annotations or []
    }
    assert set(earlier[:4]) <= cited, "the follow-up cites the earlier report's sources"


@pytest.mark.parametrize("previous", ["v1_never-issued", "deleted", "running"])
def test_bad_previous_interaction(emulator: EmulatorHandle, previous: str) -> None:
    client = emulator.client()
    target = previous
    if previous == "deleted":
        target = cast(str, turn(client, "Research X. [[emulator duration=0]]").id)
        client.interactions.delete(target)
    elif previous == "running":
        target = cast(
            str,
            client.interactions.create(agent=AGENT, input="Research X. [[emulator outcome=stuck]]", background=True).id,
        )
    expected = gi.BadRequestError if previous == "running" else gi.NotFoundError
    with pytest.raises(expected) as info:
        client.interactions.create(model=FOLLOW_UP_MODEL, input="More?", previous_interaction_id=target)
    code = cast(dict[str, Any], info.value.body)["error"]["code"]
    assert code == ("invalid_request" if previous == "running" else "not_found")


# ---- input beyond text ----------------------------------------------------------------------------------


def test_pdf_and_image_input_are_reflected(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    blocks = [
        {"type": "text", "text": "Summarise the attached survey. [[emulator duration=0]]"},
        {
            "type": "document",
            "data": b64(PDF),
            "mime_type": "application/pdf",
            "uri": "https://example.com/files/annual-report.pdf",
        },
        {"type": "document", "data": b64(PDF), "mime_type": "application/pdf"},
        {"type": "image", "data": b64(bar_chart([0.4, 0.9])), "mime_type": "image/png"},
    ]
    it = turn(client, blocks)
    assert [b.type for b in it.steps[0].content] == ["text", "document", "document", "image"]
    text = full_text(it)
    assert 'Document "annual-report.pdf" (application/pdf, 2 pages' in text
    assert 'Document "Tidal survey 2024"' in text  # no uri: named by the PDF's own title
    assert "An attached image (image/png, 120x80 px" in text


def test_image_only_input_is_accepted(emulator: EmulatorHandle) -> None:
    client = emulator.client()
    it = turn(client, [{"type": "image", "data": b64(bar_chart([0.5])), "mime_type": "image/jpeg"}])
    assert "An attached image (image/jpeg" in full_text(it)


@pytest.mark.parametrize(
    ("block", "fragment"),
    [
        ({"type": "image", "data": b64(b"GIF89a"), "mime_type": "image/gif"}, "unsupported image mime_type"),
        ({"type": "document", "data": b64(b"a,b\n"), "mime_type": "text/csv"}, "unsupported document mime_type"),
        ({"type": "image", "data": "not base64!", "mime_type": "image/png"}, "not valid base64"),
        ({"type": "document", "data": b64(b"hello"), "mime_type": "application/pdf"}, "not a PDF"),
        ({"type": "image", "mime_type": "image/png"}, "needs `data`"),
        ({"type": "audio", "data": b64(b"RIFF"), "mime_type": "audio/wav"}, "not supported"),
    ],
)
def test_unsupported_input_is_a_400(emulator: EmulatorHandle, block: dict[str, Any], fragment: str) -> None:
    with pytest.raises(gi.BadRequestError) as info:
        emulator.client().interactions.create(
            agent=AGENT, input=cast(Any, [{"type": "text", "text": "Q"}, block]), background=True
        )
    assert fragment in cast(dict[str, Any], info.value.body)["error"]["message"]
    assert emulator.stats()["interactions_created"] == 0


def test_oversized_input_is_a_400(emulator: EmulatorHandle) -> None:
    big = b"%PDF-1.4\n" + bytes(21 * 1024 * 1024)
    with pytest.raises(gi.BadRequestError) as info:
        emulator.client().interactions.create(
            agent=AGENT,
            input=[
                {"type": "text", "text": "Q"},
                {"type": "document", "data": b64(big), "mime_type": "application/pdf"},
            ],
            background=True,
        )
    assert "limit" in cast(dict[str, Any], info.value.body)["error"]["message"]
    assert emulator.stats()["interactions_created"] == 0
