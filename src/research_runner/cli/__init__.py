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

from research_runner.cli.options import BadUsage, Connection, Failure, connection_options
from research_runner.exceptions import ResearchError

# Command name → ("module:attribute" under research_runner.cli, imported on first use; its one-line help).
# The help is written here too so that `research --help` imports no command module; tests/unit/test_cli_startup.py
# checks each line still equals the command's own.
COMMANDS: dict[str, tuple[str, str]] = {
    "submit": ("jobs:submit", "Queue a research question for the workers."),
    "run": ("jobs:run", "Research a question in this process, without broker or worker, and wait for the report."),
    "list": ("jobs:list_command", "List jobs, newest first."),
    "status": ("jobs:status", "Show one job's status and details."),
    "show": ("jobs:show", "Render a job's report in the terminal."),
    "cancel": (
        "jobs:cancel",
        "Cancel a job that has not ended, or stop the interaction of one waiting for your decision.",
    ),
    "retry": ("jobs:retry", "Start a new job for one that ended without completing (or for several)."),
    "watch": (
        "jobs:watch_command",
        "Show the running jobs live, or follow one job's thought summaries as the API streams them.",
    ),
    "approve": ("threads:approve", "Approve a job's research plan; the same job then runs the research."),
    "revise": ("threads:revise", "Ask the agent for a different research plan."),
    "ask": ("threads:ask", "Ask a follow-up question on a completed job; it runs in the background as its own job."),
    "usage": ("usage:usage", "Total jobs, tokens, searches and estimated cost per day and agent."),
    "delete": (
        "usage:delete",
        "Delete a finished job's interactions at Google, its local report, or both (the default).",
    ),
    "purge": ("usage:purge", "Delete what jobs that ended longer ago than AGE left behind."),
    "batch": ("batches:batch_group", "Submit a file of questions as one batch, and follow it."),
    "schedule": ("schedules:schedule_group", "Manage cron schedules whose every firing creates a batch."),
    "scheduler": (
        "schedules:scheduler_command",
        "Run Celery beat: the dispatch tick that polls due jobs and fires due schedules.",
    ),
    "worker": ("ops:worker", "Start a Celery worker that creates, polls and stores research jobs."),
    "flower": (
        "ops:flower_command",
        "Serve Flower, Celery's web monitor, for the research tasks on the configured broker.",
    ),
    "doctor": (
        "ops:doctor_command",
        "Check settings, broker, database, API key and API, reports folder and workers, one line each.",
    ),
    "db": ("ops:db_group", "Manage the database schema."),
    "emulator": ("ops:emulator_command", "Run a local emulator of the Gemini Interactions API."),
    "web": ("web:web_command", "Serve every job, report, batch and schedule as web pages, with full-text search."),
    "export": (
        "web:export_command",
        "Write a job's report as one self-contained file: HTML with its charts embedded, or the Markdown.",
    ),
    "webhooks": (
        "webhooks:webhooks_group",
        "Receive the API's webhooks, so a finished research is stored within a second.",
    ),
}


class ResearchGroup(click.Group):
    """Loads commands lazily; every error, ours or click's, ends as one `Error: …` line and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name][0].split(":")
        command = getattr(importlib.import_module(f"research_runner.cli.{module}"), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands and their one-line help, from COMMANDS: listing them imports none of their modules."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        # A bare Command cuts the help exactly as click cuts a real command's.
        rows = [
            (name, click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)) for name in sorted(COMMANDS)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
    ctx.obj = Connection(**connection)


def main() -> None:
    cli(prog_name="research")
