"""`research batch` and `research schedule`: questions in sets, from files and from cron schedules."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
from sqlalchemy.exc import IntegrityError

from research_runner import batches, batchfile, db, display, schedules
from research_runner.batchfile import Item
from research_runner.cli import _console, _require_key, agent_option, cli, json_option, settings_of, with_database
from research_runner.config import Settings
from research_runner.constants import ACTIVE_STATUSES
from research_runner.exceptions import InvalidInput
from research_runner.jobs import clean_agent, clean_question
from research_runner.models import Batch, Schedule

BATCH_WAIT_TICK = 1.0


class BatchGroup(click.Group):
    """`research batch FILE …` is short for `research batch submit FILE …`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["submit", *args]
        return super().parse_args(ctx, args)


@cli.group("batch", cls=BatchGroup)
def batch_group() -> None:
    """Submit a file of questions as one batch, and follow it.

    \b
    Example:
        research batch competitors.csv --name "competitor profiles"
        research batch status "competitor profiles"
    """


def batch_dict(batch: Batch, jobs: list[Any]) -> dict[str, Any]:
    return {
        "id": batch.id,
        "name": batch.name,
        "source": batch.source,
        "job_count": batch.job_count,
        "counts": dict(batches.counts(jobs)),
        "digest_path": batch.digest_path,
        "created_at": batch.created_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
    }


@batch_group.command("submit")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", help="Name of the batch (default: the file name).")
@agent_option
@click.option("--wait", is_flag=True, help="Stay until every job has ended and the digest is written.")
@json_option
@click.pass_context
@with_database
def batch_submit(
    ctx: click.Context, file: Path, name: str | None, agent: str | None, wait: bool, as_json: bool
) -> None:
    """Queue every question of a text, CSV or JSON Lines file as one batch.

    \b
    Example:
        research batch submit questions.txt --name nightly --wait
    """
    from research_runner.worker import check_broker, create_app

    settings = settings_of(ctx)
    items = batchfile.read(file)  # the whole file is validated before anything is stored
    default_agent = clean_agent(agent or settings.agent)
    _require_key(settings)
    check_broker(create_app(settings), settings)
    try:
        with db.session(settings) as session:
            batch, skipped = batches.add(session, name or file.stem, items, default_agent, source=str(file))
    except IntegrityError:
        raise InvalidInput(
            "another batch with the same idempotency keys was submitted at the same time; "
            "run `research batch status` on it, or submit again to skip its keys"
        ) from None
    if wait:
        batch = _wait(settings, batch)
    found = batches.jobs_of(settings, batch.id)
    if as_json:
        click.echo(display.to_json(batch_dict(batch, found)))
    else:
        known = f"; {skipped} skipped (idempotency key already used)" if skipped else ""
        click.echo(f"Batch {batch.short_id} ({batch.name}): {batch.job_count} jobs queued{known}")
        if batch.digest_path:
            click.echo(f"Digest: {batch.digest_path}")
    if wait and any(job.status != "completed" for job in found):
        raise click.exceptions.Exit(1)


def _wait(settings: Settings, batch: Batch) -> Batch:
    console = _console(stderr=True)
    last = ""
    while batch.finished_at is None:
        tally = batches.counts(batches.jobs_of(settings, batch.id))
        line = ", ".join(f"{status}: {n}" for status, n in sorted(tally.items()))
        if line != last:
            console.print(f"{batch.short_id} · {line}", markup=False)
            last = line
        time.sleep(BATCH_WAIT_TICK)
        batch = batches.find(settings, batch.id)
    return batch


@batch_group.command("status")
@click.argument("batch_ref", metavar="BATCH")
@json_option
@click.pass_context
@with_database
def batch_status(ctx: click.Context, batch_ref: str, as_json: bool) -> None:
    """Show how many of a batch's jobs are in each status.

    \b
    Example:
        research batch status nightly
    """
    settings = settings_of(ctx)
    batch = batches.find(settings, batch_ref)
    found = batches.jobs_of(settings, batch.id)
    if as_json:
        click.echo(display.to_json(batch_dict(batch, found)))
        return
    active = sum(1 for job in found if job.status in ACTIVE_STATUSES)
    lines = [f"batch:          {batch.id} ({batch.name})", f"jobs:           {len(found)}"]
    lines += [f"{status + ':':<16}{n}" for status, n in sorted(batches.counts(found).items())]
    lines.append(f"digest:         {batch.digest_path or f'written when the last {active} job(s) end'}")
    click.echo("\n".join(lines))


@cli.group("schedule")
def schedule_group() -> None:
    """Manage cron schedules whose every firing creates a batch.

    \b
    Example:
        research schedule add monday-markets --cron "0 9 * * 1" --query "EV market news for {week}"
    """


def _next_run(schedule: Schedule) -> str:
    local = schedule.next_run_at.astimezone(ZoneInfo(schedule.timezone))
    return f"{local:%Y-%m-%d %H:%M} {schedule.timezone}"


@schedule_group.command("add")
@click.argument("name")
@click.option("--cron", required=True, help='Five-field cron expression, e.g. "0 9 * * 1".')
@click.option("--query", "queries", multiple=True, help="A question (repeatable); may use {date} and {week}.")
@click.option("--file", type=click.Path(path_type=Path), help="A batch file whose questions each firing asks.")
@agent_option
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone the cron times are in.")
@click.option(
    "--catch-up/--no-catch-up",
    default=True,
    show_default=True,
    help="After downtime, fire a missed time once (or skip it).",
)
@click.pass_context
@with_database
def schedule_add(
    ctx: click.Context,
    name: str,
    cron: str,
    queries: tuple[str, ...],
    file: Path | None,
    agent: str | None,
    timezone: str,
    catch_up: bool,
) -> None:
    """Add a schedule.

    \b
    Example:
        research schedule add weekly --cron "0 9 * * 1" --file markets.txt --timezone Europe/Paris
    """
    settings = settings_of(ctx)
    if bool(queries) == bool(file):
        raise InvalidInput("give the questions with --query (repeatable) or --file, not both")
    items = batchfile.read(file) if file else [Item(clean_question(q)) for q in queries]
    schedule = schedules.add(settings, name, cron, items, clean_agent(agent or settings.agent), timezone, catch_up)
    click.echo(f"Schedule {schedule.name} added: {len(items)} question(s), next run {_next_run(schedule)}")


@schedule_group.command("list")
@click.pass_context
@with_database
def schedule_list(ctx: click.Context) -> None:
    """List schedules with their next run time.

    \b
    Example:
        research schedule list
    """
    found = schedules.all_schedules(settings_of(ctx))
    if not found:
        click.echo("No schedules.")
        return
    rows = [("NAME", "CRON", "STATE", "NEXT RUN", "QUESTIONS")]
    rows += [
        (s.name, s.cron, "paused" if s.paused else "active", _next_run(s), str(len(schedules.items_of(s))))
        for s in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    click.echo(
        "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
    )


@schedule_group.command("show")
@click.argument("name")
@click.pass_context
@with_database
def schedule_show(ctx: click.Context, name: str) -> None:
    """Show a schedule and its questions.

    \b
    Example:
        research schedule show weekly
    """
    s = schedules.find(settings_of(ctx), name)
    last = s.last_run_at.isoformat() if s.last_run_at else "never"
    lines = [
        f"name:           {s.name}",
        f"cron:           {s.cron} ({s.timezone})",
        f"state:          {'paused' if s.paused else 'active'}",
        f"next run:       {_next_run(s)}",
        f"last run:       {last}",
        f"catch up:       {'yes' if s.catch_up else 'no'}",
        f"agent:          {s.agent}",
        "questions:",
    ]
    lines += [f"  - {item.question}" for item in schedules.items_of(s)]
    click.echo("\n".join(lines))


@schedule_group.command("pause")
@click.argument("name")
@click.pass_context
@with_database
def schedule_pause(ctx: click.Context, name: str) -> None:
    """Stop a schedule from firing until it is resumed.

    \b
    Example:
        research schedule pause weekly
    """
    schedule = schedules.set_paused(settings_of(ctx), name, True)
    click.echo(f"Schedule {schedule.name} paused")


@schedule_group.command("resume")
@click.argument("name")
@click.pass_context
@with_database
def schedule_resume(ctx: click.Context, name: str) -> None:
    """Let a paused schedule fire again, from its next time after now.

    \b
    Example:
        research schedule resume weekly
    """
    schedule = schedules.set_paused(settings_of(ctx), name, False)
    click.echo(f"Schedule {schedule.name} resumed: next run {_next_run(schedule)}")


@schedule_group.command("remove")
@click.argument("name")
@click.pass_context
@with_database
def schedule_remove(ctx: click.Context, name: str) -> None:
    """Delete a schedule (the batches it created stay).

    \b
    Example:
        research schedule remove weekly
    """
    schedule = schedules.remove(settings_of(ctx), name)
    click.echo(f"Schedule {schedule.name} removed")


@schedule_group.command("run-now")
@click.argument("name")
@click.pass_context
@with_database
def schedule_run_now(ctx: click.Context, name: str) -> None:
    """Fire a schedule once now, leaving its next run time as it is.

    \b
    Example:
        research schedule run-now weekly
    """
    settings = settings_of(ctx)
    batch = schedules.run_now(settings, name)
    click.echo(f"Schedule {name} fired: batch {batch.short_id} with {batch.job_count} jobs")


@cli.command("scheduler")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
@with_database
def scheduler_command(ctx: click.Context, loglevel: str) -> None:
    """Run Celery beat: the dispatch tick that polls due jobs and fires due schedules.

    Run one (several are safe: each due time fires once), and start workers with --no-beat.

    \b
    Example:
        research scheduler
    """
    from research_runner.scheduler import run_beat
    from research_runner.worker import create_app

    run_beat(create_app(settings_of(ctx)), loglevel)
