"""`research batch`: a file of questions as one batch, and its progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from research_runner import batches, display
from research_runner.cli.options import agent_option, client_of, console, json_option
from research_runner.models import Batch, Job
from research_runner.status import ACTIVE_STATUSES


class BatchGroup(click.Group):
    """`research batch FILE …` is short for `research batch submit FILE …`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["submit", *args]
        return super().parse_args(ctx, args)


@click.group("batch", cls=BatchGroup)
def batch_group() -> None:
    """Submit a file of questions as one batch, and follow it.

    \b
    Example:
        research batch competitors.csv --name "competitor profiles"
        research batch status "competitor profiles"
    """


def batch_dict(batch: Batch, jobs: list[Job]) -> dict[str, Any]:
    return {
        "id": batch.id,
        "name": batch.name,
        "source": batch.source,
        "job_count": batch.job_count,
        "counts": dict(batches.counts(jobs)),
        "job_ids": [job.id for job in jobs],
        "digest_path": batch.digest_path,
        "created_at": batch.created_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
    }


@batch_group.command("submit")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", help="Name of the batch (default: the file name).")
@agent_option
@click.option("--wait", is_flag=True, help="Stay until every job has ended and the digest is written.")
@click.option("--no-charts", "no_charts", is_flag=True, help="Ask for reports without charts.")
@json_option
@click.pass_context
def batch_submit(
    ctx: click.Context, file: Path, name: str | None, agent: str | None, wait: bool, no_charts: bool, as_json: bool
) -> None:
    """Queue every question of a text, CSV or JSON Lines file as one batch.

    \b
    Example:
        research batch submit questions.txt --name nightly --wait
    """
    client = client_of(ctx)
    submitted = client.submit_batch(file, name=name, agent=agent, charts=False if no_charts else None)
    batch = client.wait_batch(submitted.batch.id, _printer()) if wait else submitted.batch
    found = client.batch_jobs(batch)
    if as_json:
        click.echo(display.to_json(batch_dict(batch, found) | {"skipped": submitted.skipped}))
    else:
        known = f"; {submitted.skipped} skipped (idempotency key already used)" if submitted.skipped else ""
        click.echo(f"Batch {batch.short_id} ({batch.name}): {batch.job_count} jobs queued{known}")
        if batch.digest_path:
            click.echo(f"Digest: {batch.digest_path}")
    if wait and any(job.status != "completed" for job in found):
        raise click.exceptions.Exit(1)


def _printer() -> Any:
    """A progress callback for wait_batch: one line on stderr each time the counts change."""
    err, last = console(stderr=True), [""]

    def show(batch: Batch, jobs: list[Job]) -> None:
        line = ", ".join(f"{status}: {n}" for status, n in sorted(batches.counts(jobs).items()))
        if line != last[0]:
            err.print(f"{batch.short_id} · {line}", markup=False)
            last[0] = line

    return show


@batch_group.command("status")
@click.argument("batch_ref", metavar="BATCH")
@json_option
@click.pass_context
def batch_status(ctx: click.Context, batch_ref: str, as_json: bool) -> None:
    """Show how many of a batch's jobs are in each status.

    \b
    Example:
        research batch status nightly
    """
    client = client_of(ctx)
    batch = client.batch(batch_ref)
    found = client.batch_jobs(batch)
    if as_json:
        click.echo(display.to_json(batch_dict(batch, found)))
        return
    active = sum(1 for job in found if job.status in ACTIVE_STATUSES)
    lines = [f"batch:          {batch.id} ({batch.name})", f"jobs:           {len(found)}"]
    lines += [f"{status + ':':<16}{n}" for status, n in sorted(batches.counts(found).items())]
    lines.append(f"digest:         {batch.digest_path or f'written when the last {active} job(s) end'}")
    if batch.digest_error:
        lines.append(f"digest error:   {batch.digest_error}")
    click.echo("\n".join(lines))
