"""`research webhooks`: run the receiver, and manage the project's static webhooks through the SDK.

A webhook's signing secret is shown by the API once, at registration (and at each rotation): it goes straight
into the database's webhook_secrets table, where every receiver reads it, and is never printed or logged.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import click

from research_runner import display
from research_runner.cli.options import client_of, json_option
from research_runner.exceptions import InvalidInput, PermanentError

ROTATION_GRACE = timedelta(hours=24)  # the API keeps signing with the previous secret this long (SDK docs)


@click.group("webhooks")
def webhooks_group() -> None:
    """Receive the API's webhooks, so a finished research is stored within a second.

    \b
    Example:
        research webhooks serve --port 8780
        research webhooks register https://research.example.org/webhooks
        research webhooks list
    """


@webhooks_group.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: RESEARCH_WEBHOOK_HOST).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default: RESEARCH_WEBHOOK_PORT).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the webhook receiver: verify each delivery, record it once, make its job's poll due.

    \b
    Example:
        research webhooks serve --host 0.0.0.0 --port 8780
    """
    from research_runner import webhooks

    settings = client_of(ctx).db
    try:
        webhooks.serve(
            settings,
            host or settings.webhook_host,
            settings.webhook_port if port is None else port,
            announce=_announce,
        )
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {host or settings.webhook_host}:{port}: {exc.strerror or exc}") from None


@webhooks_group.command("register")
@click.argument("url")
@click.option("--name", default="research-runner", show_default=True, help="A name for the webhook.")
@json_option
@click.pass_context
def register(ctx: click.Context, url: str, name: str, as_json: bool) -> None:
    """Register URL as a project webhook for the interaction events; its secret is stored, not shown.

    \b
    Example:
        research webhooks register https://research.example.org/webhooks
    """
    from research_runner import webhooks

    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{url!r} is not an http:// or https:// URL")
    client = client_of(ctx)
    created = client.gateway().create_webhook(url, list(webhooks.REGISTER_EVENTS), name)
    secret, webhook_id = created.pop("new_signing_secret", None), created.get("id")
    if not secret or not webhook_id:
        raise PermanentError("the API created the webhook but returned no id or signing secret; remove it and retry")
    webhooks.save_secret(client.db, str(webhook_id), url, str(secret))
    del secret
    _show(created, as_json, f"Registered webhook {webhook_id} for {url}; its signing secret is stored (not shown).")


@webhooks_group.command("list")
@json_option
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """The project's webhooks, and whether this runner holds a secret for each.

    \b
    Example:
        research webhooks list --json
    """
    from research_runner import webhooks

    client = client_of(ctx)
    stored = webhooks.stored_webhooks(client.db)
    found = [hook | {"secret_stored": hook.get("id") in stored} for hook in client.gateway().list_webhooks()]
    if as_json:
        click.echo(display.to_json(found))
        return
    if not found:
        click.echo("No webhooks registered; `research webhooks register URL` adds one.")
    for hook in found:
        events = ",".join(hook.get("subscribed_events") or [])
        stored_note = "secret stored" if hook["secret_stored"] else "no secret here"
        click.echo(f"{hook.get('id')}  {hook.get('state', '?'):<8} {hook.get('uri')}  [{events}]  {stored_note}")


@webhooks_group.command("rotate")
@click.argument("webhook_id")
@click.option("--now", "revoke_now", is_flag=True, help="Revoke the previous secret at once instead of in 24 h.")
@click.pass_context
def rotate(ctx: click.Context, webhook_id: str, revoke_now: bool) -> None:
    """Give WEBHOOK_ID a new signing secret; the old one keeps verifying for 24 h unless --now.

    \b
    Example:
        research webhooks rotate 1a2b3c
    """
    from research_runner import webhooks

    client = client_of(ctx)
    secret = client.gateway().rotate_webhook_secret(webhook_id, revoke_now)
    webhooks.rotate_secret(client.db, webhook_id, secret, timedelta(0) if revoke_now else ROTATION_GRACE)
    del secret
    when = "now" if revoke_now else "in 24 hours"
    click.echo(
        f"Rotated the secret of webhook {webhook_id}; the new one is stored (not shown), the old expires {when}."
    )


@webhooks_group.command("remove")
@click.argument("webhook_id")
@click.pass_context
def remove(ctx: click.Context, webhook_id: str) -> None:
    """Delete WEBHOOK_ID from the project and forget its secrets.

    \b
    Example:
        research webhooks remove 1a2b3c
    """
    from research_runner import webhooks

    client = client_of(ctx)
    client.gateway().delete_webhook(webhook_id)
    forgotten = webhooks.forget_secrets(client.db, webhook_id)
    click.echo(f"Removed webhook {webhook_id}" + (f" and its {forgotten} stored secret(s)." if forgotten else "."))


@webhooks_group.command("ping")
@click.argument("webhook_id")
@click.pass_context
def ping(ctx: click.Context, webhook_id: str) -> None:
    """Ask the API to send WEBHOOK_ID a signed test delivery (`research doctor` checks it arrived).

    \b
    Example:
        research webhooks ping 1a2b3c
    """
    client_of(ctx).gateway().ping_webhook(webhook_id)
    click.echo(f"Ping requested for webhook {webhook_id}.")


def _announce(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()  # a supervisor or test reads the URL while the server runs


def _show(hook: dict[str, object], as_json: bool, line: str) -> None:
    click.echo(display.to_json(hook) if as_json else line)
