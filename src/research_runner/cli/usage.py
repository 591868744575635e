"""Money and housekeeping: what the research cost, and deleting what finished jobs left behind."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta

import click

from research_runner import display
from research_runner.cli.options import BadUsage, client_of, json_option
from research_runner.pricing import PRICES_AS_OF

AGE = re.compile(r"(\d+)([dhw])")
UNITS = {"d": "days", "h": "hours", "w": "weeks"}


def _date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise BadUsage(f"invalid date {value!r}; use YYYY-MM-DD") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@click.command()
@click.option("--since", metavar="DATE", help="Only jobs that finished on or after this day (YYYY-MM-DD, UTC).")
@click.option("--batch", "batch_ref", metavar="BATCH", help="Only the jobs of this batch.")
@json_option
@click.pass_context
def usage(ctx: click.Context, since: str | None, batch_ref: str | None, as_json: bool) -> None:
    """Total jobs, tokens, searches and estimated cost per day and agent.

    \b
    Example:
        research usage --since 2026-11-01
    """
    rows = client_of(ctx).usage(_date(since), batch_ref)
    if as_json:
        click.echo(display.to_json([asdict(row) for row in rows]))
        return
    if not rows:
        click.echo("No finished jobs.")
        return
    lines = [("DAY", "AGENT", "JOBS", "TOKENS", "SEARCHES", "COST")]
    lines += [(r.day, r.agent, str(r.jobs), f"{r.total_tokens:,}", str(r.searches), f"${r.cost_usd:,.2f}")
              for r in rows]  # fmt: skip
    total = sum(r.cost_usd for r in rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    click.echo("\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines))
    click.echo(f"Total estimated cost: ${total:,.2f} (prices as of {PRICES_AS_OF}; RESEARCH_PRICES overrides them)")


def _where(remote: bool, local: bool) -> tuple[bool, bool]:
    if not remote and not local:  # neither flag: both
        return True, True
    return remote, local


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--remote", is_flag=True, help="Delete the job's interactions at Google.")
@click.option("--local", is_flag=True, help="Delete the job's report files (and the report text in the database).")
@click.pass_context
def delete(ctx: click.Context, job_id: str, remote: bool, local: bool) -> None:
    """Delete a finished job's interactions at Google, its local report, or both (the default).

    \b
    Example:
        research delete 3f2a9c1d --remote
    """
    remote, local = _where(remote, local)
    done = client_of(ctx).delete(job_id, remote=remote, local=local)
    parts = [f"{len(done.interactions)} interaction(s) at Google"] if remote else []
    parts += [f"{len(done.files)} local file(s)"] if local else []
    click.echo(f"Job {done.job.short_id}: deleted {' and '.join(parts)}")


def _age(value: str) -> timedelta:
    match = AGE.fullmatch(value.strip())
    if not match:
        raise BadUsage(f"invalid age {value!r}; use a number and d, h or w, e.g. 30d")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


@click.command()
@click.option("--older-than", "older_than", required=True, metavar="AGE", help="e.g. 30d, 12h, 8w.")
@click.option("--remote", is_flag=True, help="Only the interactions at Google.")
@click.option("--local", is_flag=True, help="Only the local report files.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, and delete nothing.")
@click.pass_context
def purge(ctx: click.Context, older_than: str, remote: bool, local: bool, dry_run: bool) -> None:
    """Delete what jobs that ended longer ago than AGE left behind.

    \b
    Example:
        research purge --older-than 30d --dry-run
    """
    remote, local = _where(remote, local)
    done = client_of(ctx).purge(_age(older_than), remote=remote, local=local, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for item in done:
        click.echo(f"{item.job.short_id}: {verb} {len(item.interactions)} interaction(s), {len(item.files)} file(s)")
    click.echo(f"{len(done)} job(s) {'would be' if dry_run else 'were'} purged")
