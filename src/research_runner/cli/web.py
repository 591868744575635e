"""`research web` (the pages) and `research export` (one report as a file)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from research_runner.cli.options import client_of
from research_runner.exceptions import InvalidInput, ServiceUnavailable
from research_runner.web.guard import LOOPBACK


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port to serve on.")
@click.option("--no-auth", is_flag=True, help="Serve without a login; only allowed on a loopback address.")
@click.pass_context
def web_command(ctx: click.Context, host: str, port: int, no_auth: bool) -> None:
    """Serve every job, report, batch and schedule as web pages, with full-text search.

    The login comes from RESEARCH_WEB_BASIC_AUTH=user:password; without it the server refuses to start
    unless --no-auth is given, which only listens on 127.0.0.1 or ::1. The pages only read.

    \b
    Example:
        RESEARCH_WEB_BASIC_AUTH=admin:change-me research web --port 8080
    """
    import uvicorn

    from research_runner.web.app import create_app

    if no_auth and host not in LOOPBACK:
        raise InvalidInput(f"--no-auth only serves on a loopback address (127.0.0.1 or ::1), not {host}")
    client = client_of(ctx)
    if client.settings.web_basic_auth is None and not no_auth:
        raise InvalidInput(
            "the pages would be open to anyone who can reach them: set RESEARCH_WEB_BASIC_AUTH=user:password, "
            "or pass --no-auth to serve on 127.0.0.1 without a login"
        )
    app = create_app(client.db, no_auth=no_auth)  # the schema is checked before anything is served
    click.echo(f"Serving on http://{host}:{port}" + (" without a login (--no-auth)" if no_auth else ""), err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", http="h11", loop="asyncio", access_log=True)
    except (OSError, SystemExit) as exc:  # uvicorn exits when it cannot bind
        raise ServiceUnavailable(f"cannot serve on {host}:{port} ({exc})") from None


@click.command("export")
@click.argument("job")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default="html", show_default=True)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout)."
)
@click.pass_context
def export_command(ctx: click.Context, job: str, fmt: str, output: Path | None) -> None:
    """Write a job's report as one self-contained file: HTML with its charts embedded, or the Markdown.

    \b
    Example:
        research export 3f2a9c1d --format html -o heat-pumps.html
    """
    from research_runner.reports import write_atomically
    from research_runner.web.export import export

    client = client_of(ctx)
    text = export(client.db, client.get(job), "html" if fmt == "html" else "md", client.settings.web_url)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        write_atomically(output, text)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output} ({exc.strerror})") from None
    click.echo(f"Wrote {output}", err=True)
