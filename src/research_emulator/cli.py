"""`research emulator` / `python -m research_emulator`: run the emulator in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from .server import bind_socket, serve, socket_url
from .settings import SettingsError, build_settings, load_config_file, parse_duration, validate_faults


class _OneLineErrors(click.Command):
    """Report bad input as exactly one `Error: ...` line on stderr with exit code 2 (no usage block)."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            _fail(exc.format_message())

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            _fail(str(exc))


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(2)


@click.command("emulator", cls=_OneLineErrors)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=8765, show_default=True, help="Port; 0 picks a free one.")
@click.option("--seed", type=int, default=None, help="Seed for ids, outcomes, durations, content and faults.")
@click.option("--duration", default=None, metavar="MIN:MAX", help="Run time range in seconds (default 2:6).")
@click.option("--retention", type=float, default=None, help="Seconds an `expired` interaction stays readable.")
@click.option(
    "--outcome-rate",
    "--outcomes",
    "outcome_rates",
    multiple=True,
    metavar="OUTCOME=RATE[,...]",
    help="Outcome rates for interactions without a directive; the rest complete.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="ENDPOINT:KIND=RATE",
    help="HTTP fault, e.g. get:429=0.2 or create:lost=0.1 (repeatable).",
)
@click.option("--retry-after", type=float, default=None, help="Retry-After seconds sent with 429 faults.")
@click.option("--slow-delay", type=float, default=None, help="Delay in seconds of `slow` faults.")
@click.option("--thought-steps", type=int, default=None, help="Thought steps per agent interaction.")
@click.option(
    "--api-key",
    envvar="RESEARCH_EMULATOR_API_KEY",
    default=None,
    help="Accept only this key (default: any non-empty key).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML or JSON file with the same keys as these flags.",
)
@click.option("--log-level", default=None, help="uvicorn log level (default warning).")
def emulator_command(
    host: str,
    port: int,
    seed: int | None,
    duration: str | None,
    retention: float | None,
    outcome_rates: tuple[str, ...],
    faults: tuple[str, ...],
    retry_after: float | None,
    slow_delay: float | None,
    thought_steps: int | None,
    api_key: str | None,
    config_file: Path | None,
    log_level: str | None,
) -> None:
    """Run a local emulator of the Gemini Interactions API (deep-research agents)."""
    ctx = click.get_current_context()
    fields: dict[str, Any] = load_config_file(config_file) if config_file else {}
    # Flags given on the command line override the config file; defaults do not.
    for name, value in (("host", host), ("port", port)):
        if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT or name not in fields:
            fields[name] = value
    optional = {
        "seed": seed,
        "retention": retention,
        "retry_after": retry_after,
        "slow_delay": slow_delay,
        "thought_steps": thought_steps,
        "api_key": api_key,
        "log_level": log_level,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    if duration is not None:
        fields["duration_min"], fields["duration_max"] = parse_duration(duration)
    if outcome_rates:
        fields["outcome_rates"] = list(outcome_rates)
    if faults:
        fields["faults"] = {**validate_faults(fields.get("faults")), **validate_faults(list(faults))}
    settings = build_settings(fields)
    sock = bind_socket(settings.host, settings.port)
    # Test fixtures read this exact first line to learn the port; the socket already accepts connections.
    click.echo(f"Emulator listening on {socket_url(sock)}")
    # On stderr: the first stdout line is read by tools; these tell a person how to point the runner here.
    key = "the key given with --api-key" if settings.api_key else "any-key"
    click.echo(f"Point research-runner at it:\n  export RESEARCH_GEMINI_BASE_URL={socket_url(sock)}\n"
               f"  export GEMINI_API_KEY={key if settings.api_key is None else '<' + key + '>'}", err=True)  # fmt: skip
    sys.stdout.flush()
    serve(settings, sock)
