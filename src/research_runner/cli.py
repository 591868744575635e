"""`research`: a thin command-line shell over research_runner's Python API."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from pydantic import SecretStr
from rich.console import Console

from research_emulator.cli import emulator_command
from research_runner import batches, db, display, jobs
from research_runner.config import Settings, load_settings
from research_runner.constants import AGENTS, JobStatus
from research_runner.exceptions import InvalidInput, ResearchError
from research_runner.models import Job

if TYPE_CHECKING:
    from research_runner.watch import LiveJobs

F = TypeVar("F", bound=Callable[..., Any])
# A private emulator finishes in seconds, so poll it often.
EMULATOR_POLL = {"poll_initial": 0.5, "poll_max": 2.0}
EMULATOR_KEY = "local-emulator"


class Failure(click.ClickException):
    exit_code = 1


class BadUsage(click.ClickException):
    exit_code = 2


class ResearchGroup(click.Group):
    """Every error, ours or click's, ends as one `Error: …` line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ResearchError as exc:
            raise (BadUsage if exc.exit_code == BadUsage.exit_code else Failure)(str(exc)) from None

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            _exit_with(f"Error: {exc.format_message()}{where}", exc.exit_code)
        except click.ClickException as exc:
            _exit_with(f"Error: {exc.format_message()}", exc.exit_code)
        except click.Abort:
            _exit_with("Aborted.", 1)
        sys.exit(result if isinstance(result, int) else 0)


def _exit_with(line: str, code: int) -> NoReturn:
    click.echo(line, err=True)
    sys.exit(code)


def connection_options(func: F) -> F:
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


def settings_of(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None
    return settings


def with_database(func: F) -> F:
    """Commands that read or write jobs check the database and its schema first."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        db.ensure_schema(settings_of(click.get_current_context()))
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


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
    ctx.obj = load_settings(**connection)


def _console(stderr: bool = False) -> Console:
    # Piped output keeps whole lines instead of rich's 80-column default.
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, highlight=False, soft_wrap=True, width=None if stream.isatty() else 200)


def _progress() -> LiveJobs:
    """Progress goes to stderr, so stdout carries only the result (a line, or JSON); drawn as `research watch`."""
    from research_runner.watch import LiveJobs

    return LiveJobs(_console(stderr=True))


def _enqueuer(settings: Settings) -> Callable[[str], None]:
    from research_runner.worker import create_app, enqueue

    app = create_app(settings)
    return lambda job_id: enqueue(app, settings, job_id)


def _require_key(settings: Settings) -> None:
    if settings.api_key is None:
        raise InvalidInput("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or use `research run --emulator`")


def _finish(job: Job, as_json: bool) -> None:
    click.echo(display.to_json(display.job_dict(job)) if as_json else display.outcome_line(job))
    if job.status != JobStatus.COMPLETED:
        raise click.exceptions.Exit(1)


@cli.command()
@click.argument("question")
@agent_option
@click.option("--wait", is_flag=True, help="Stay until the job ends, showing progress.")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Submitting again with the same key returns the first job instead of starting another.",
)
@json_option
@click.pass_context
@with_database
def submit(
    ctx: click.Context, question: str, agent: str | None, wait: bool, idempotency_key: str | None, as_json: bool
) -> None:
    """Queue a research question for the workers.

    \b
    Example:
        research submit "What limits solid-state battery production?" --wait
    """
    settings = settings_of(ctx)
    _require_key(settings)
    job, created = jobs.submit(
        settings, question, agent or settings.agent, _enqueuer(settings), idempotency_key=idempotency_key
    )
    if not created and not as_json:
        click.echo(f"Job {job.short_id} was already submitted with this idempotency key ({job.status})")
    if wait:
        with _progress() as view:
            job = jobs.wait(settings, job.id, view)
        _finish(job, as_json)
    elif as_json:
        click.echo(display.to_json(display.job_dict(job)))
    elif created:
        click.echo(f"Submitted job {job.short_id}: {display.preview(job.question, display.QUESTION_PREVIEW)}")


@contextmanager
def _run_settings(settings: Settings, emulator: bool | None) -> Iterator[Settings]:
    from research_emulator import EmulatorSettings, run_in_thread

    use_emulator = emulator if emulator is not None else settings.api_key is None
    if not use_emulator:
        _require_key(settings)
        yield settings
        return
    with run_in_thread(EmulatorSettings(host="127.0.0.1", port=0)) as running:
        click.echo(f"Using a private local emulator at {running.url}: the report will be emulated.", err=True)
        yield settings.model_copy(
            update={"gemini_base_url": running.url, "api_key": SecretStr(EMULATOR_KEY), **EMULATOR_POLL}
        )


@cli.command()
@click.argument("question")
@agent_option
@click.option(
    "--emulator/--no-emulator",
    default=None,
    help="Run against a private local emulator (default: only when no API key is set).",
)
@json_option
@click.pass_context
@with_database
def run(ctx: click.Context, question: str, agent: str | None, emulator: bool | None, as_json: bool) -> None:
    """Research a question in this process, without broker or worker, and wait for the report.

    \b
    Example:
        research run "Which open datasets track urban tree cover?" --emulator
    """
    from research_runner.gateway import Gateway

    settings = settings_of(ctx)
    with _run_settings(settings, emulator) as run_settings, _progress() as view:
        gateway = Gateway(run_settings)  # key and settings are checked before anything is stored
        job = jobs.create(settings, question, agent or settings.agent)
        try:
            job = jobs.run_inline(run_settings, job.id, gateway, view)
        except KeyboardInterrupt:
            _interrupted(settings, run_settings, job.id)
            raise click.Abort() from None
    _finish(job, as_json)


def _interrupted(settings: Settings, run_settings: Settings, job_id: str) -> None:
    if run_settings.gemini_base_url != settings.gemini_base_url:
        # The private emulator dies with this process, and its interaction with it.
        jobs.abandon(settings, job_id, "interrupted; the private emulator stopped with `research run`")
        return
    click.echo(
        f"Job {job_id[:8]} goes on: a `research worker` will finish it, or `research cancel {job_id[:8]}`.", err=True
    )


@cli.command("list")
@click.option("--status", type=click.Choice([s.value for s in JobStatus]), help="Only jobs in this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="At most this many.")
@click.option("--batch", "batch_ref", metavar="BATCH", help="Only jobs of this batch (id, id prefix or name).")
@json_option
@click.pass_context
@with_database
def list_command(ctx: click.Context, status: str | None, limit: int, batch_ref: str | None, as_json: bool) -> None:
    """List jobs, newest first.

    \b
    Example:
        research list --status running --limit 50
    """
    settings = settings_of(ctx)
    batch_id = batches.find(settings, batch_ref).id if batch_ref else None
    found = jobs.list_jobs(settings, status, limit, batch_id)
    if as_json:
        click.echo(display.to_json([display.job_dict(job) for job in found]))
    elif not found:
        click.echo("No jobs.")
    else:
        _console().print(display.jobs_table(found))


@cli.command()
@click.argument("job_id", metavar="JOB")
@json_option
@click.pass_context
@with_database
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job's status and details.

    \b
    Example:
        research status 3f2a9c1d
    """
    job = jobs.find(settings_of(ctx), job_id)
    click.echo(display.to_json(display.job_dict(job)) if as_json else display.status_card(job))


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.option("--raw", is_flag=True, help="Print the Markdown file as stored, front matter included.")
@click.pass_context
@with_database
def show(ctx: click.Context, job_id: str, raw: bool) -> None:
    """Render a job's report in the terminal.

    \b
    Example:
        research show 3f2a9c1d
    """
    job = jobs.find(settings_of(ctx), job_id)
    if not job.report_markdown:
        raise Failure(f"job {job.short_id} has no report ({job.status}{': ' + job.error if job.error else ''})")
    if raw:
        click.echo(job.report_markdown, nl=False)
    else:
        display.render_report(_console(), job)


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.pass_context
@with_database
def cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a job that has not ended, or stop the interaction of one waiting for your decision.

    \b
    Example:
        research cancel 3f2a9c1d
    """
    from research_runner.gateway import Gateway

    settings = settings_of(ctx)
    job = jobs.cancel(settings, job_id, lambda: Gateway(settings))
    click.echo(display.outcome_line(job))


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.pass_context
@with_database
def retry(ctx: click.Context, job_id: str) -> None:
    """Start a new job for one that ended without completing.

    \b
    Example:
        research retry 3f2a9c1d
    """
    settings = settings_of(ctx)
    _require_key(settings)
    job = jobs.retry(settings, job_id, _enqueuer(settings))
    click.echo(f"Submitted job {job.short_id} (retry of {job.retry_of[:8] if job.retry_of else ''})")


@cli.command()
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
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), help="Celery pool.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
@with_database
def worker(ctx: click.Context, concurrency: int | None, beat: bool, pool: str | None, loglevel: str) -> None:
    """Start a Celery worker that creates, polls and stores research jobs.

    \b
    Example:
        research worker --concurrency 4
    """
    from research_runner.worker import create_app, run_worker

    settings = settings_of(ctx)
    _require_key(settings)
    if concurrency:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    run_worker(create_app(settings), settings, beat=beat, pool=pool, loglevel=loglevel)


@cli.group("db")
def db_group() -> None:
    """Manage the database schema."""


@db_group.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Migrate the database to the newest schema.

    \b
    Example:
        RESEARCH_DATABASE_URL=postgresql://localhost/research research db upgrade
    """
    before, after = db.upgrade(settings_of(ctx))
    click.echo(f"Database schema at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))


cli.add_command(emulator_command)


def main() -> None:
    cli(prog_name="research")


# Commands of other parts register themselves on `cli` when their modules are imported.
from research_runner import cli_batch, cli_ops  # noqa: E402,F401
