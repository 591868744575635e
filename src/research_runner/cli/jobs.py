"""Commands on single jobs: submit, run, list, status, show, cancel, retry, watch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from research_runner import display
from research_runner.cli.options import Failure, agent_option, client_of, console, finish, json_option
from research_runner.models import JobStatus

if TYPE_CHECKING:
    from research_runner.watch import LiveJobs


def _progress() -> LiveJobs:
    """Progress goes to stderr, so stdout carries only the result (a line, or JSON); drawn as `research watch`."""
    from research_runner.watch import LiveJobs

    return LiveJobs(console(stderr=True))


@click.command()
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
def submit(
    ctx: click.Context, question: str, agent: str | None, wait: bool, idempotency_key: str | None, as_json: bool
) -> None:
    """Queue a research question for the workers.

    \b
    Example:
        research submit "What limits solid-state battery production?" --wait
    """
    client = client_of(ctx)
    submitted = client.submit(question, agent=agent, idempotency_key=idempotency_key)
    job = submitted.job
    if not submitted.created and not as_json:
        click.echo(f"Job {job.short_id} was already submitted with this idempotency key ({job.status})")
    if wait:
        with _progress() as view:
            job = client.wait(job.id, view)
        finish(job, as_json)
    elif as_json:
        click.echo(display.to_json(display.job_dict(job)))
    elif submitted.created:
        click.echo(f"Submitted job {job.short_id}: {display.preview(job.question, display.QUESTION_PREVIEW)}")


@click.command()
@click.argument("question")
@agent_option
@click.option(
    "--emulator/--no-emulator",
    default=None,
    help="Run against a private local emulator (default: only when no API key is set).",
)
@json_option
@click.pass_context
def run(ctx: click.Context, question: str, agent: str | None, emulator: bool | None, as_json: bool) -> None:
    """Research a question in this process, without broker or worker, and wait for the report.

    \b
    Example:
        research run "Which open datasets track urban tree cover?" --emulator
    """
    client = client_of(ctx)
    notice = console(stderr=True)
    try:
        with _progress() as view:
            job = client.run(question, agent=agent, emulator=emulator, progress=view,
                             notice=lambda line: notice.print(line, markup=False))  # fmt: skip
    except KeyboardInterrupt:
        raise click.Abort() from None
    finish(job, as_json)


@click.command("list")
@click.option("--status", type=click.Choice([s.value for s in JobStatus]), help="Only jobs in this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="At most this many.")
@click.option("--batch", "batch_ref", metavar="BATCH", help="Only jobs of this batch (id, id prefix or name).")
@json_option
@click.pass_context
def list_command(ctx: click.Context, status: str | None, limit: int, batch_ref: str | None, as_json: bool) -> None:
    """List jobs, newest first.

    \b
    Example:
        research list --status running --limit 50
    """
    found = client_of(ctx).list_jobs(status, limit, batch_ref)
    if as_json:
        click.echo(display.to_json([display.job_dict(job) for job in found]))
    elif not found:
        click.echo("No jobs.")
    else:
        console().print(display.jobs_table(found))


@click.command()
@click.argument("job_id", metavar="JOB")
@json_option
@click.pass_context
def status(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job's status and details.

    \b
    Example:
        research status 3f2a9c1d
    """
    job = client_of(ctx).get(job_id)
    click.echo(display.to_json(display.job_dict(job)) if as_json else display.status_card(job))


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--raw", is_flag=True, help="Print the Markdown file as stored, front matter included.")
@click.pass_context
def show(ctx: click.Context, job_id: str, raw: bool) -> None:
    """Render a job's report in the terminal.

    \b
    Example:
        research show 3f2a9c1d
    """
    job = client_of(ctx).get(job_id)
    if not job.report_markdown:
        raise Failure(f"job {job.short_id} has no report ({job.status}{': ' + job.error if job.error else ''})")
    if raw:
        click.echo(job.report_markdown, nl=False)
    else:
        display.render_report(console(), job)


@click.command()
@click.argument("job_id", metavar="JOB")
@json_option
@click.pass_context
def cancel(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Cancel a job that has not ended, or stop the interaction of one waiting for your decision.

    \b
    Example:
        research cancel 3f2a9c1d
    """
    job = client_of(ctx).cancel(job_id)
    click.echo(display.to_json(display.job_dict(job)) if as_json else display.outcome_line(job))


@click.command()
@click.argument("job_id", metavar="JOB")
@json_option
@click.pass_context
def retry(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Start a new job for one that ended without completing.

    \b
    Example:
        research retry 3f2a9c1d
    """
    job = client_of(ctx).retry(job_id)
    if as_json:
        click.echo(display.to_json(display.job_dict(job)))
    else:
        click.echo(f"Submitted job {job.short_id} (retry of {job.retry_of[:8] if job.retry_of else ''})")


@click.command("watch")
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
    client = client_of(ctx)
    if job_id is None:
        watch.watch_all(client.db, console(), interval, once)
    elif watch.follow(client.db, job_id, client.gateway, console()) != JobStatus.COMPLETED:
        raise click.exceptions.Exit(1)
