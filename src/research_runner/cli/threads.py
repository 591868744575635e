"""Talking to the agent: approve or revise a research plan, ask a follow-up question."""

from __future__ import annotations

import click

from research_runner import display
from research_runner.cli.options import client_of, console, finish, json_option


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--note", metavar="TEXT", help="Something to add to the approval, e.g. a focus for the research.")
@json_option
@click.pass_context
def approve(ctx: click.Context, job_id: str, note: str | None, as_json: bool) -> None:
    """Approve a job's research plan; the same job then runs the research.

    \b
    Example:
        research approve 3f2a9c1d --note "Focus on Europe"
    """
    job = client_of(ctx).approve(job_id, note)
    click.echo(display.to_json(display.job_dict(job)) if as_json else f"Job {job.short_id}: plan approved; "
               "the research starts at the next dispatch tick")  # fmt: skip


@click.command()
@click.argument("job_id", metavar="JOB")
@click.argument("change")
@json_option
@click.pass_context
def revise(ctx: click.Context, job_id: str, change: str, as_json: bool) -> None:
    """Ask the agent for a different research plan.

    \b
    Example:
        research revise 3f2a9c1d "Add a step on recycling costs"
    """
    job = client_of(ctx).revise(job_id, change)
    click.echo(display.to_json(display.job_dict(job)) if as_json else f"Job {job.short_id}: revision asked for; "
               "it is plan_ready again once the agent has answered")  # fmt: skip


@click.command()
@click.argument("job_id", metavar="JOB")
@click.argument("question")
@click.option("--wait", is_flag=True, help="Stay until the answer is in, and print it.")
@click.option("--no-charts", "no_charts", is_flag=True, help="Ask for an answer without charts.")
@json_option
@click.pass_context
def ask(ctx: click.Context, job_id: str, question: str, wait: bool, no_charts: bool, as_json: bool) -> None:
    """Ask a follow-up question on a completed job; it runs in the background as its own job.

    \b
    Example:
        research ask 3f2a9c1d "Which of these costs fall fastest?" --wait
    """
    client = client_of(ctx)
    job = client.ask(job_id, question, charts=False if no_charts else None)
    if not wait:
        click.echo(display.to_json(display.job_dict(job)) if as_json else
                   f"Asked job {job.short_id} (follow-up of {job.parent_id and job.parent_id[:8]})")  # fmt: skip
        return
    job = client.wait(job.id)
    if job.report_markdown and not as_json:
        display.render_markdown(console(), job.report_markdown, f"{job.short_id} · follow-up · {job.report_path}")
    finish(job, as_json)
