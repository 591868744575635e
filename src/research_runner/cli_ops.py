"""Operating commands: `research flower`, `research watch` and `research doctor` (registered on `cli`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from research_runner.cli import _console, cli, settings_of, with_database
from research_runner.constants import JobStatus

if TYPE_CHECKING:
    from research_runner.gateway import Gateway


@cli.command("flower")
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


@cli.command("watch")
@click.argument("job_id", metavar="[JOB]", required=False)
@click.option("--once", is_flag=True, help="Print the running jobs once and exit (without JOB).")
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes of the running jobs.",
)
@click.pass_context
@with_database
def watch_command(ctx: click.Context, job_id: str | None, once: bool, interval: float) -> None:
    """Show the running jobs live, or follow one job's thought summaries as the API streams them.

    \b
    Example:
        research watch            # every running job: status, elapsed time, polls, latest thought
        research watch 3f2a9c1d   # one job's thoughts as they arrive, then how it ended
    """
    from research_runner import watch

    if once and job_id is not None:
        raise click.UsageError("--once lists the running jobs; give it no JOB")
    settings = settings_of(ctx)
    if job_id is None:
        watch.watch_all(settings, _console(), interval, once)
        return

    def gateway() -> Gateway:  # built only if the job still has a stream to follow
        from research_runner.gateway import Gateway

        return Gateway(settings)

    if watch.follow(settings, job_id, gateway, _console()) != JobStatus.COMPLETED:
        raise click.exceptions.Exit(1)


@cli.command("doctor")
@click.pass_context
def doctor_command(ctx: click.Context) -> None:
    """Check settings, broker, database, API key and API, reports folder and workers, one line each.

    Each failed check says how to fix it; the exit code is 1 if any failed.

    \b
    Example:
        research doctor
    """
    from research_runner.doctor import run_checks

    failed = False
    for check in run_checks(settings_of(ctx)):
        click.echo(check.line())
        failed = failed or check.failed
    if failed:
        raise click.exceptions.Exit(1)
