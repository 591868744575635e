"""`research`: a thin command-line shell over research_runner.Client.

Each command parses its arguments, calls one Client method and prints. Command modules are imported only when
their command runs (or help lists them), so a command never pays for Celery, the SDK or the emulator unless it
uses them.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from research_runner.cli.options import BadUsage, Failure, connection_options
from research_runner.exceptions import ResearchError

# Command name → "module:attribute" under research_runner.cli, imported on first use.
COMMANDS = {
    "submit": "jobs:submit",
    "run": "jobs:run",
    "list": "jobs:list_command",
    "status": "jobs:status",
    "show": "jobs:show",
    "cancel": "jobs:cancel",
    "retry": "jobs:retry",
    "watch": "jobs:watch_command",
    "batch": "batches:batch_group",
    "schedule": "schedules:schedule_group",
    "scheduler": "schedules:scheduler_command",
    "worker": "ops:worker",
    "flower": "ops:flower_command",
    "doctor": "ops:doctor_command",
    "db": "ops:db_group",
    "emulator": "ops:emulator_command",
    "web": "web:web_command",
    "export": "web:export_command",
}


class ResearchGroup(click.Group):
    """Loads commands lazily; every error, ours or click's, ends as one `Error: …` line and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name].split(":")
        command = getattr(importlib.import_module(f"research_runner.cli.{module}"), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ResearchError as exc:
            raise (BadUsage if exc.exit_code == BadUsage.exit_code else Failure)(str(exc)) from None

    def main(  # type: ignore[override]
        self, args: list[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
        standalone_mode: bool = True, **extra: Any,
    ) -> Any:  # fmt: skip
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        args = sys.argv[1:] if args is None else list(args)
        if not args:  # plain `research` asks for help, it is no mistake
            args = ["--help"]
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            _exit_with(f"Error: {exc.format_message()}{where}", exc.exit_code)
        except click.ClickException as exc:
            _exit_with(f"Error: {exc.format_message()}", exc.exit_code)
        except click.Abort:
            _exit_with("Aborted.", 1)
        except Exception as exc:  # a bug of ours: one line for the user, the traceback in a file
            _exit_with(f"Error: unexpected {type(exc).__name__}: {exc} (full traceback in {_log_traceback()})", 1)
        sys.exit(result if isinstance(result, int) else 0)


def _exit_with(line: str, code: int) -> NoReturn:
    click.echo(line, err=True)
    sys.exit(code)


def _log_traceback() -> Path:
    folder = Path(tempfile.gettempdir()) / "research-runner"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"traceback-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.log"
    path.write_text(traceback.format_exc())
    return path


@click.group("research", cls=ResearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@connection_options
@click.version_option(package_name="research-runner")
@click.pass_context
def cli(ctx: click.Context, /, **connection: Any) -> None:
    """Run Gemini Deep Research jobs in the background and keep their reports.

    \b
    Example:
        research run "How did the Raspberry Pi change computing education?"
    """
    from research_runner.client import Client

    ctx.obj = Client(**connection)


def main() -> None:
    cli(prog_name="research")
