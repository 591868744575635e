"""`research schedule` and `research scheduler`: cron schedules whose every firing creates a batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from research_runner import display, schedules
from research_runner.cli.options import agent_option, client_of, json_option
from research_runner.models import Schedule


@click.group("schedule")
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
    schedule = client_of(ctx).add_schedule(
        name, cron, queries=queries, file=file, agent=agent, timezone=timezone, catch_up=catch_up
    )
    count = len(schedules.items_of(schedule))
    click.echo(f"Schedule {schedule.name} added: {count} question(s), next run {_next_run(schedule)}")


def _state(schedule: Schedule) -> str:
    state = "paused" if schedule.paused else "active"
    return f"{state}, failing" if schedule.last_error else state


def schedule_dict(schedule: Schedule) -> dict[str, Any]:
    return {
        "name": schedule.name, "cron": schedule.cron, "timezone": schedule.timezone, "agent": schedule.agent,
        "paused": schedule.paused, "catch_up": schedule.catch_up, "next_run_at": schedule.next_run_at.isoformat(),
        "last_run_at": schedule.last_run_at.isoformat() if schedule.last_run_at else None,
        "failures": schedule.failures, "last_error": schedule.last_error,
        "questions": [item.question for item in schedules.items_of(schedule)],
    }  # fmt: skip


@schedule_group.command("list")
@json_option
@click.pass_context
def schedule_list(ctx: click.Context, as_json: bool) -> None:
    """List schedules with their next run time.

    \b
    Example:
        research schedule list
    """
    found = client_of(ctx).schedules()
    if as_json:
        click.echo(display.to_json([schedule_dict(s) for s in found]))
        return
    if not found:
        click.echo("No schedules.")
        return
    rows = [("NAME", "CRON", "STATE", "NEXT RUN", "QUESTIONS")]
    rows += [(s.name, s.cron, _state(s), _next_run(s), str(len(schedules.items_of(s)))) for s in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    click.echo(
        "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
    )


@schedule_group.command("show")
@click.argument("name")
@json_option
@click.pass_context
def schedule_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a schedule and its questions.

    \b
    Example:
        research schedule show weekly
    """
    s = client_of(ctx).schedule(name)
    if as_json:
        click.echo(display.to_json(schedule_dict(s)))
        return
    rows = [
        ("name", s.name), ("cron", f"{s.cron} ({s.timezone})"), ("state", _state(s)), ("next run", _next_run(s)),
        ("last run", display.when(s.last_run_at) if s.last_run_at else "never"),
        ("catch up", "yes" if s.catch_up else "no"), ("agent", s.agent),
        ("failures", f"{s.failures} in a row" if s.failures else None), ("last error", s.last_error),
    ]  # fmt: skip
    lines = [f"{label + ':':<16}{value}" for label, value in rows if value is not None]
    lines += ["questions:"] + [f"  - {item.question}" for item in schedules.items_of(s)]
    click.echo("\n".join(lines))


@schedule_group.command("pause")
@click.argument("name")
@click.pass_context
def schedule_pause(ctx: click.Context, name: str) -> None:
    """Stop a schedule from firing until it is resumed.

    \b
    Example:
        research schedule pause weekly
    """
    schedule = client_of(ctx).pause_schedule(name)
    click.echo(f"Schedule {schedule.name} paused")


@schedule_group.command("resume")
@click.argument("name")
@click.pass_context
def schedule_resume(ctx: click.Context, name: str) -> None:
    """Let a paused schedule fire again, from its next time after now.

    \b
    Example:
        research schedule resume weekly
    """
    schedule = client_of(ctx).pause_schedule(name, paused=False)
    click.echo(f"Schedule {schedule.name} resumed: next run {_next_run(schedule)}")


@schedule_group.command("remove")
@click.argument("name")
@click.pass_context
def schedule_remove(ctx: click.Context, name: str) -> None:
    """Delete a schedule (the batches it created stay).

    \b
    Example:
        research schedule remove weekly
    """
    schedule = client_of(ctx).remove_schedule(name)
    click.echo(f"Schedule {schedule.name} removed")


@schedule_group.command("run-now")
@click.argument("name")
@click.pass_context
def schedule_run_now(ctx: click.Context, name: str) -> None:
    """Fire a schedule once now, leaving its next run time as it is.

    \b
    Example:
        research schedule run-now weekly
    """
    batch = client_of(ctx).run_schedule_now(name)
    click.echo(f"Schedule {name} fired: batch {batch.short_id} with {batch.job_count} jobs")


@click.command("scheduler")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def scheduler_command(ctx: click.Context, loglevel: str) -> None:
    """Run Celery beat: the dispatch tick that polls due jobs and fires due schedules.

    Run one (several are safe: each due time fires once), and start workers with --no-beat.

    \b
    Example:
        research scheduler
    """
    from research_runner.beat import run_beat

    client = client_of(ctx)
    client.db  # noqa: B018 (the schema is checked before beat starts)
    run_beat(client.celery, loglevel)
