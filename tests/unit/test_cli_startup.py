"""What keeps `research` quick to start: static command help, the schema head without alembic, few imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from research_runner import db
from research_runner.cli import COMMANDS, cli

# Heavy packages that only some commands need; `research list` must not pay for them.
NOT_FOR_LIST = ("celery", "google.genai", "starlette", "uvicorn", "alembic", "croniter", "yaml", "rich.markdown")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_static_help_is_the_commands_own(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    assert COMMANDS[name][1] == command.get_short_help_str(limit=1_000)


def test_schema_head_is_alembics() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "research_runner:migrations")
    assert ScriptDirectory.from_config(config).get_current_head() == db.SCHEMA_HEAD


def test_list_imports_no_heavy_package(tmp_path: Path) -> None:
    # `research list` on an embedded database (a file: no service), once to create it, then in a fresh
    # interpreter that reports what the command imported.
    env = {**os.environ, "RESEARCH_DATA_DIR": str(tmp_path), "RESEARCH_REPORTS_DIR": str(tmp_path / "reports")}
    subprocess.run([sys.executable, "-m", "research_runner", "list"], env=env, capture_output=True, check=True)
    code = (
        "import sys\n"
        "from research_runner.cli import cli\n"
        "cli.main(['list'], standalone_mode=False)\n"
        f"print([m for m in {NOT_FOR_LIST!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
