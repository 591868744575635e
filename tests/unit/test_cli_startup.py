"""What keeps `research` quick to start: static command help, the schema head without alembic, few imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from research_runner import constants, db, store
from research_runner.cli import COMMANDS, cli
from research_runner.constants import DEFAULT_AGENT
from research_runner.settings import load_settings

# Heavy packages that only some commands need; `research list` and `status` must not pay for them (SQLAlchemy
# and SQLModel included: these two read through readonly.py).
NOT_FOR_READS = ("celery", "google.genai", "starlette", "uvicorn", "alembic", "croniter", "yaml", "rich.markdown",
                 "sqlalchemy", "sqlmodel", "psycopg")  # fmt: skip


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
    assert ScriptDirectory.from_config(config).get_current_head() == constants.SCHEMA_HEAD


def test_reads_import_no_heavy_package(tmp_path: Path) -> None:
    # An embedded database (a file: no service) with one job, then `list` and
    # `status` each in a fresh interpreter that reports what the command imported.
    env = {**os.environ, "RESEARCH_DATA_DIR": str(tmp_path), "RESEARCH_REPORTS_DIR": str(tmp_path / "reports")}
    settings = load_settings(data_dir=tmp_path, reports_dir=tmp_path / "reports")
    db.ensure_schema(settings)
    job = store.add(settings, store.new_job(settings, "Which?", DEFAULT_AGENT))
    # `status` prints plain lines: not even rich.
    for command, heavy in ((["list"], NOT_FOR_READS), (["status", job.short_id], (*NOT_FOR_READS, "rich"))):
        code = (
            "import sys\n"
            "from research_runner.cli import cli\n"
            f"cli.main({command!r}, standalone_mode=False)\n"
            f"print([m for m in {heavy!r} if m in sys.modules])\n"
        )
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert job.short_id in done.stdout
        assert done.stdout.strip().splitlines()[-1] == "[]", command
