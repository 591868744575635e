"""The `[[emulator outcome=O duration=S]]` directive: parsing, and 400s through the real SDK."""

from __future__ import annotations

from typing import Any, cast

import pytest
from google.genai import _interactions as gi

from research_emulator.directives import Directive, DirectiveError, parse_directive

from emulator_support import AGENT, EmulatorHandle


@pytest.mark.parametrize(
    ("text", "directive", "cleaned"),
    [
        ("Plain question", None, "Plain question"),
        ("Q [[emulator outcome=failed duration=2.5]]", Directive("failed", 2.5), "Q"),
        ("[[emulator duration=0 outcome=stuck]] Q here", Directive("stuck", 0.0), "Q here"),
        ("Before [[ emulator ]] after", Directive(), "Before after"),
        ("A [[emulator duration=1]]\nB", Directive(None, 1.0), "A B"),
        ("Mind [[brackets]] here", None, "Mind [[brackets]] here"),
        ("Q [[emulator charts=3 chart=broken-base64]]", Directive(charts=3, chart="broken-base64"), "Q"),
        ("Q [[emulator chart=broken-mime charts=0]]", Directive(charts=0, chart="broken-mime"), "Q"),
    ],
)
def test_valid_directives(text: str, directive: Directive | None, cleaned: str) -> None:
    assert parse_directive(text) == (directive, cleaned)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Q [[emulator color=red]]", "unknown directive key 'color'"),
        ("Q [[emulator outcome=exploded]]", "unknown outcome 'exploded'"),
        ("Q [[emulator duration=-1]]", "duration must be a finite number >= 0"),
        ("Q [[emulator duration=soon]]", "not a number"),
        ("Q [[emulator duration=nan]]", "finite"),
        ("Q [[emulator outcome=failed", "malformed"),
        ("Q [[emulator outcome]]", "expected key=value"),
        ("Q [[emulator outcome=failed outcome=stuck]]", "given twice"),
        ("Q [[emulator]] [[emulator]]", "only one"),
        ("Q [[Emulator Outcome=failed]]", "unknown directive key 'Outcome'"),
        ("Q [[emulator charts=11]]", "whole number from 0 to 10"),
        ("Q [[emulator charts=-1]]", "whole number"),
        ("Q [[emulator charts=1.5]]", "whole number"),
        ("Q [[emulator chart=pretty]]", "unknown chart 'pretty'"),
        ("Q [[emulator chart=broken-mime chart=broken-base64]]", "given twice"),
    ],
)
def test_invalid_directives(text: str, fragment: str) -> None:
    with pytest.raises(DirectiveError, match=fragment.replace("[", r"\[")):
        parse_directive(text)


@pytest.mark.parametrize(
    "directive",
    [
        "[[emulator colour=red]]",
        "[[emulator outcome=exploded]]",
        "[[emulator duration=-1]]",
        "[[emulator outcome=failed",
        "[[emulator charts=many]]",
        "[[emulator chart=broken-png]]",
    ],
)
def test_bad_directive_is_a_400_through_the_sdk(emulator: EmulatorHandle, directive: str) -> None:
    with pytest.raises(gi.BadRequestError) as info:
        emulator.client().interactions.create(agent=AGENT, input=f"Research X {directive}", background=True)
    assert cast(dict[str, Any], info.value.body)["error"]["code"] == "invalid_request"
    stats = emulator.stats()
    assert stats["interactions_created"] == 0 and stats["requests"]["create"] == {"400": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"agent": AGENT, "input": "", "background": True},
        {"agent": AGENT, "background": True},
        {"agent": AGENT, "input": "Q"},
        {"agent": AGENT, "input": "Q", "background": True, "store": False},
        {"input": "Q", "background": True},
        {"agent": AGENT, "model": "gemini-2.5-pro", "input": "Q", "background": True},
        {"model": "gpt-4", "input": "Q"},
    ],
)
def test_create_validation(emulator: EmulatorHandle, body: dict[str, object]) -> None:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        emulator.url + "/v1/interactions",
        data=json.dumps(body).encode(),
        headers={"x-goog-api-key": "k", "content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    assert json.loads(info.value.read())["error"]["code"] == "invalid_request"
