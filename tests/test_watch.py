"""`research watch`: the running jobs from the database, and one job's thoughts from its event stream."""

from __future__ import annotations

import re
from typing import Any

import pytest
from click.testing import CliRunner

from research_runner import lifecycle, store
from research_runner.cli import cli
from research_runner.constants import DEFAULT_AGENT
from research_runner.gateway import Gateway

from conftest import create_job, settings_from
from emulator_support import EmulatorHandle

THOUGHT_LINE = re.compile(r"^\[\d\d:\d\d\] (?!status: |error: )(.+)$")


def emulated_thoughts(emulator: EmulatorHandle, interaction_id: str) -> list[str]:
    data: dict[str, Any] = emulator.client().interactions.with_raw_response.get(interaction_id).json()
    return [
        " ".join(block["text"] for block in step.get("summary") or [])
        for step in data["steps"]
        if step["type"] == "thought"
    ]


def test_watch_prints_the_thoughts_in_order_across_stream_cuts(
    runner_env: dict[str, str], emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(runner_env, monkeypatch)
    job = create_job(settings, "How are glaciers measured? [[emulator duration=2]]", DEFAULT_AGENT)
    lifecycle.start(settings, Gateway(settings), job.id)  # the interaction runs; no worker polls it

    listed = CliRunner().invoke(cli, ["watch", "--once"], env=runner_env)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.split("\n")[0].split() == ["ID", "STATUS", "ELAPSED", "POLLS", "QUESTION", "LATEST", "THOUGHT"]
    assert listed.stdout.split("\n")[1].startswith(f"{job.short_id}  running")

    emulator.set_faults({"stream": {"cut": 1}})  # every stream connection is cut after 1-4 events
    result = CliRunner().invoke(cli, ["watch", job.short_id], env=runner_env)
    assert result.exit_code == 0, result.output

    interaction_id = store.load(settings, job.id).interaction_id  # type: ignore[union-attr]
    assert interaction_id is not None
    printed = [m.group(1) for line in result.stdout.splitlines() if (m := THOUGHT_LINE.match(line))]
    expected = emulated_thoughts(emulator, interaction_id)
    assert len(expected) == 4 and printed == expected  # each once, in order, though the stream kept dropping
    stream_requests = sum(emulator.stats()["requests"]["stream"].values())
    assert stream_requests > 3, "the stream was resumed several times"
    lines = result.stdout.splitlines()
    assert lines[-2].endswith("status: completed")
    assert lines[-1] == (
        f"Job {job.short_id}: the interaction ended completed; a worker stores the outcome at its next poll"
    )


def test_watch_of_an_ended_job_prints_its_outcome(runner_env: dict[str, str]) -> None:
    ran = CliRunner().invoke(
        cli, ["run", "--no-emulator", "Fails? [[emulator outcome=failed duration=0.3]]"], env=runner_env
    )
    assert ran.exit_code == 1, ran.output
    short = ran.stdout.split()[1]
    result = CliRunner().invoke(cli, ["watch", short], env=runner_env)
    assert (result.exit_code, result.stdout) == (1, ran.stdout)
