"""What every command shares: the connection options, --json, --agent, the Client, consoles and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from research_runner.constants import AGENTS

if TYPE_CHECKING:
    from rich.console import Console

    from research_runner.client import Client
    from research_runner.models import Job
    from research_runner.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """A domain error: unknown job, unreachable service, job not completed (exit 1)."""

    exit_code = 1


class BadUsage(click.ClickException):
    """Bad input (exit 2)."""

    exit_code = 2


def connection_options(func: F) -> F:
    """The options that say where the data lives; each also reads its RESEARCH_* variable."""
    options = [
        click.option("--database-url", envvar="RESEARCH_DATABASE_URL", help="SQLAlchemy URL of the job database."),
        click.option("--broker-url", envvar="RESEARCH_BROKER_URL", help="Celery broker URL (redis://… or sqla+…)."),
        click.option(
            "--reports-dir",
            envvar="RESEARCH_REPORTS_DIR",
            type=click.Path(path_type=Path),
            help="Folder for Markdown reports.",
        ),
        click.option(
            "--data-dir",
            envvar="RESEARCH_DATA_DIR",
            type=click.Path(path_type=Path),
            help="Folder for the embedded SQLite database and broker.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def agent_option(func: F) -> F:
    return click.option(
        "--agent",
        default=None,
        metavar="AGENT",
        help=f"Deep Research agent: {', '.join(AGENTS)} (default: RESEARCH_AGENT).",
    )(func)


class Connection:
    """Where the group's options say the data lives, made into Settings and a Client only when a command asks:
    `research list` and `status` read without the Client (see readonly.py), so they never import SQLAlchemy."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    @cached_property
    def settings(self) -> Settings:
        from research_runner.settings import load_settings

        return load_settings(**self.options)

    @cached_property
    def client(self) -> Client:
        from research_runner.client import Client

        return Client(self.settings)


def connection_of(ctx: click.Context) -> Connection:
    connection = ctx.find_object(Connection)
    assert connection is not None  # the group sets it before any command runs
    return connection


def client_of(ctx: click.Context) -> Client:
    return connection_of(ctx).client


def settings_of(ctx: click.Context) -> Settings:
    return connection_of(ctx).settings


def console(stderr: bool = False) -> Console:
    """A rich console; piped output keeps whole lines, with no padding to a terminal's width."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, highlight=False, soft_wrap=True, width=None if stream.isatty() else 200)


def finish(job: Job, as_json: bool) -> None:
    """Print how a job ended; exit 1 unless it completed (or stopped with a plan for the user)."""
    from research_runner import display

    click.echo(display.to_json(display.job_dict(job)) if as_json else display.outcome_line(job))
    if job.status not in ("completed", "plan_ready"):  # a plan waiting for the user is where --plan stops
        raise click.exceptions.Exit(1)
