"""Operating commands: worker, flower, doctor, db upgrade, and the emulator."""

from __future__ import annotations

from typing import Any

import click

from research_runner import display
from research_runner.cli.options import client_of, json_option, settings_of
from research_runner.exceptions import InvalidInput


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 512),
    help="Worker processes or threads (default: RESEARCH_WORKER_CONCURRENCY).",
)
@click.option(
    "--beat/--no-beat",
    default=True,
    show_default=True,
    help="Also run the dispatch tick in this worker (turn off when a `research scheduler` runs).",
)
@click.option(
    "--pool",
    type=click.Choice(["threads", "prefork", "solo"]),
    help="Celery pool (default: RESEARCH_WORKER_POOL, threads).",
)
@click.option("--name", metavar="NAME", help="Worker name, e.g. fast-1@%h (default: research-<pid>@<host>).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def worker(
    ctx: click.Context, concurrency: int | None, beat: bool, pool: str | None, name: str | None, loglevel: str
) -> None:
    """Start a Celery worker that creates, polls and stores research jobs.

    \b
    Example:
        research worker --concurrency 4 --name fast-1@%h
    """
    from research_runner.worker import create_app, run_worker

    client = client_of(ctx)
    settings = client.db
    if settings.api_key is None:
        raise InvalidInput("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY); a worker calls the API")
    if concurrency:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    pool = pool or settings.worker_pool
    run_worker(create_app(settings), settings, with_beat=beat, pool=pool, loglevel=loglevel, name=name)


@click.group("db")
def db_group() -> None:
    """Manage the database schema.

    \b
    Example:
        research db upgrade
    """


@db_group.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Migrate the database to the newest schema.

    \b
    Example:
        RESEARCH_DATABASE_URL=postgresql://localhost/research research db upgrade
    """
    before, after = client_of(ctx).upgrade_db()
    click.echo(f"Database schema at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))


class _LazyEmulator(click.Command):
    """`research emulator`: the emulator package (starlette, uvicorn) is imported only when it runs."""

    def _real(self) -> click.Command:
        from research_emulator.cli import emulator_command

        return emulator_command

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:  # fmt: skip
        return self._real().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        return self._real().invoke(ctx)


emulator_command = _LazyEmulator(
    "emulator",
    help="Run a local emulator of the Gemini Interactions API (see docs/emulator.md).",
    short_help="Run a local emulator of the Gemini Interactions API.",
    add_help_option=False,
)


@click.command("flower")
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True, help="Port to serve on.")
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (0.0.0.0 for every interface, e.g. in a container).",
)
@click.option("--no-auth", is_flag=True, help="Serve without a login; only on a network you trust.")
@click.pass_context
def flower_command(ctx: click.Context, port: int, address: str, no_auth: bool) -> None:
    """Serve Flower, Celery's web monitor, for the research tasks on the configured broker.

    The login comes from RESEARCH_FLOWER_BASIC_AUTH=user:password; without it Flower refuses to start
    unless --no-auth is given. Flower needs Redis or RabbitMQ as the broker.

    \b
    Example:
        RESEARCH_FLOWER_BASIC_AUTH=admin:change-me research flower --port 5555
    """
    from research_runner.flower import run_flower

    run_flower(settings_of(ctx), port, address, no_auth)


@click.command("doctor")
@json_option
@click.pass_context
def doctor_command(ctx: click.Context, as_json: bool) -> None:
    """Check settings, broker, database, API key and API, reports folder and workers, one line each.

    Each failed check says how to fix it; the exit code is 1 if any failed.

    \b
    Example:
        research doctor
    """
    from research_runner.doctor import run_checks

    checks = []
    for check in run_checks(settings_of(ctx)):  # each line as soon as its check is done
        checks.append(check)
        if not as_json:
            click.echo(check.line())
    if as_json:
        click.echo(display.to_json([check.as_dict() for check in checks]))
    if any(check.failed for check in checks):
        raise click.exceptions.Exit(1)
