"""Commands on single jobs: submit, run, list, status, show, cancel, retry, watch."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from research_runner import display
from research_runner.cli.options import Failure, agent_option, client_of, console, finish, json_option, settings_of
from research_runner.status import ACTIVE_STATUSES, JobStatus

if TYPE_CHECKING:
    from research_runner.client import Client, Review
    from research_runner.display import AnyJob
    from research_runner.models import Job, JobTurn
    from research_runner.readonly import Reader, TurnRow
    from research_runner.watch import LiveJobs

T = TypeVar("T")


def research_options(func: Any) -> Any:
    """--no-charts, --plan and --file: what submit and run send with a question."""
    func = click.option("--file", "files", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
                        help="An image or PDF to research with the question (repeatable).")(func)  # fmt: skip
    func = click.option("--plan", is_flag=True,
                        help="Review the agent's research plan first (approve or revise it).")(func)  # fmt: skip
    return click.option("--no-charts", "no_charts", is_flag=True, help="Ask for a report without charts.")(func)


@contextmanager
def _progress() -> Iterator[LiveJobs]:
    """Progress goes to stderr, so stdout carries only the result (a line, or JSON); drawn as `research watch`."""
    from research_runner.watch import LiveJobs

    try:
        with LiveJobs(sys.stderr) as view:
            yield view
    except KeyboardInterrupt:
        # The view has vanished; "Aborted." takes its place (click would print an empty line before it).
        raise click.Abort() from None


@click.command()
@click.argument("question")
@agent_option
@click.option("--wait", is_flag=True, help="Stay until the job ends, showing progress.")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Submitting again with the same key returns the first job instead of starting another.",
)
@research_options
@json_option
@click.pass_context
def submit(
    ctx: click.Context, question: str, agent: str | None, wait: bool, idempotency_key: str | None, as_json: bool,
    no_charts: bool, plan: bool, files: tuple[Path, ...],
) -> None:  # fmt: skip
    """Queue a research question for the workers.

    \b
    Example:
        research submit "What limits solid-state battery production?" --wait
        research submit "Summarise the risks in this contract" --file contract.pdf --plan
    """
    client = client_of(ctx)
    submitted = client.submit(question, agent=agent, idempotency_key=idempotency_key, charts=False if no_charts
                              else None, plan=plan, files=files)  # fmt: skip
    job = submitted.job
    if not submitted.created and not as_json:
        click.echo(f"Job {job.short_id} was already submitted with this idempotency key ({job.status})")
    if wait:
        finish(_follow(client, job), as_json)
    elif as_json:
        click.echo(display.to_json(display.job_dict(job)))
    elif submitted.created:
        click.echo(f"Submitted job {job.short_id}: {display.preview(job.question, display.QUESTION_PREVIEW)}")
    if not as_json and not wait and client.stalled():
        click.echo("Note: earlier jobs are overdue, so no worker seems to be running; start one with "
                   "`research worker`", err=True)  # fmt: skip


@click.command()
@click.argument("question")
@agent_option
@click.option(
    "--emulator/--no-emulator",
    default=None,
    help="Run against a private local emulator (default: only when no API key is set).",
)
@research_options
@json_option
@click.pass_context
def run(
    ctx: click.Context, question: str, agent: str | None, emulator: bool | None, as_json: bool, no_charts: bool,
    plan: bool, files: tuple[Path, ...],
) -> None:  # fmt: skip
    """Research a question in this process, without broker or worker, and wait for the report.

    With --plan on a terminal, each plan is shown and you approve it or type what to change.

    \b
    Example:
        research run "Which open datasets track urban tree cover?" --emulator
    """
    client = client_of(ctx)
    with _progress() as view:
        review = _reviewer(view) if plan and sys.stdin.isatty() else None
        # Through the view's own console, so a line prints above the live table instead of through it.
        job = client.run(question, agent=agent, emulator=emulator, progress=view, charts=False if no_charts
                         else None, plan=plan, files=files, review=review,
                         notice=lambda line: view.console.print(line, markup=False))  # fmt: skip
    finish(job, as_json)


RETRYABLE = {s.value for s in JobStatus} - {s.value for s in ACTIVE_STATUSES} - {"completed", "plan_ready"}


def _follow(client: Client, job: Job) -> Job:
    """Show a submitted job's progress on stderr until a worker has stored its end: its thought summaries as
    the API streams them (as `research watch JOB` does) when this machine has an API key, else its row."""
    from research_runner import lifecycle, watch

    if client.settings.api_key is None:
        with _progress() as view, lifecycle.interruptible():
            return client.wait(job.id, view)

    watch.follow(client.db, job.id, client.gateway, console(stderr=True))
    return client.wait(job.id)


def _reviewer(view: LiveJobs) -> Review:
    """`run --plan`'s review: each plan shown and answered with the live view off the screen."""

    def review(job: Job) -> str | None:
        with view.paused():
            return _review(job)

    return review


def _review(job: Job) -> str | None:
    """Show a plan on the terminal; None approves it, any text asks for those changes."""
    display.render_markdown(console(stderr=True), job.plan_markdown or "", f"{job.short_id} · research plan")
    try:
        answer = click.prompt("Approve this plan? Press Enter to approve, or type what to change", default="",
                              show_default=False, err=True)  # fmt: skip
    except click.Abort:  # click's prompt turns Ctrl-C into Abort: the run must see it as the Ctrl-C it was
        click.echo(err=True)  # ends the prompt's line, after the echoed ^C
        raise KeyboardInterrupt from None
    return answer.strip() or None


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
    found = _jobs(ctx, status, limit, batch_ref)
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
    job, turns = _job_and_turns(ctx, job_id)
    if as_json:
        interactions = [{"kind": t.kind, "interaction_id": t.interaction_id, "created_at": t.created_at.isoformat()}
                        for t in turns]  # fmt: skip
        click.echo(display.to_json(display.job_dict(job) | {"interactions": interactions}))
        return
    click.echo(display.status_card(job))
    for turn in turns if len(turns) > 1 else []:
        click.echo(f"{'turn:':<16}{turn.kind} {turn.interaction_id} ({display.when(turn.created_at)})")


def _jobs(ctx: click.Context, status: str | None, limit: int, batch_ref: str | None) -> Sequence[AnyJob]:
    found = _read(ctx, lambda reader: reader.list_jobs(status, limit)) if batch_ref is None else None
    return found if found is not None else client_of(ctx).list_jobs(status, limit, batch_ref)


def _job_and_turns(ctx: click.Context, ref: str) -> tuple[AnyJob, Sequence[TurnRow | JobTurn]]:
    found = _read(ctx, lambda reader: (job := reader.find(ref), reader.turns(job.id)))
    if found is not None:
        return found
    client = client_of(ctx)
    job = client.get(ref)
    return job, client.turns(job)


def _read(ctx: click.Context, query: Callable[[Reader], T]) -> T | None:
    """`query` on the fast read-only path, or None when the command must go through the Client."""
    from research_runner.readonly import open_reader

    with open_reader(settings_of(ctx)) as reader:
        return None if reader is None else query(reader)


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
    thread = client_of(ctx).thread(job_id)
    job = thread[0]
    if raw:
        if not job.report_markdown:
            raise Failure(f"job {job.short_id} has no report ({job.status}{': ' + job.error if job.error else ''})")
        click.echo(job.report_markdown, nl=False)
        return
    shown = [_show_one(item) for item in thread]
    if not shown[0]:
        raise Failure(f"job {job.short_id} has no report ({job.status}{': ' + job.error if job.error else ''})")


def _show_one(job: Job) -> bool:
    """The job's report, or its plan while that waits; False if it has neither yet."""
    out = console()
    where = f"follow-up of {job.parent_id[:8]} · " if job.parent_id else ""
    if job.report_markdown:
        display.render_markdown(out, job.report_markdown, f"{job.short_id} · {where}{job.status} · {job.report_path}")
        if job.figures:  # the report refers to them relative to itself; here, where they are
            out.out(f"figures: {', '.join(json.loads(job.figures))}", highlight=False)
        return True
    if job.plan_markdown:
        display.render_markdown(out, job.plan_markdown, f"{job.short_id} · {where}research plan ({job.status})")
        return True
    if job.parent_id:
        out.out(f"{job.short_id} · {where}{job.status}: {job.question}", highlight=False)
    return False


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
@click.argument("job_ids", metavar="[JOB]...", nargs=-1)
@click.option("--status", type=click.Choice(sorted(RETRYABLE)), help="Also every job in this status not retried yet.")
@click.option("--batch", "batch_ref", metavar="BATCH", help="Also the jobs of this batch (with --status: only those).")
@json_option
@click.pass_context
def retry(ctx: click.Context, job_ids: tuple[str, ...], status: str | None, batch_ref: str | None,
          as_json: bool) -> None:  # fmt: skip
    """Start a new job for one that ended without completing (or for several).

    \b
    Example:
        research retry 3f2a9c1d
        research retry --status needs_attention     # e.g. after a crash during a burst of creates
    """
    client = client_of(ctx)
    if len(job_ids) == 1 and status is None and batch_ref is None:
        jobs = [client.retry(job_ids[0])]
    elif not job_ids and status is None and batch_ref is None:
        raise click.UsageError("give a JOB, or --status/--batch to retry several")
    else:
        jobs = client.retry_many(job_ids, status=status, batch=batch_ref)
    if as_json:
        click.echo(display.to_json([display.job_dict(job) for job in jobs] if len(jobs) > 1 or not job_ids
                                   else display.job_dict(jobs[0])))  # fmt: skip
        return
    for job in jobs:
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
