"""`research flower`: Flower on the configured broker, behind basic auth unless told otherwise.

Flower runs in this process through Celery's own command line (`celery flower`, registered by the flower
package), with our Celery app, so it knows the `research.*` tasks and the broker without extra flags.
"""

from __future__ import annotations

import os
import sys

from research_runner.exceptions import InvalidInput, ServiceUnavailable
from research_runner.settings import Settings, redact_url

# Flower reads FLOWER_<OPTION> variables; the credentials go there rather than on the command line,
# where any user of the machine could read them with `ps`.
FLOWER_AUTH_VARIABLE = "FLOWER_BASIC_AUTH"


def flower_argv(port: int, address: str) -> list[str]:
    """The `celery` command line that serves Flower; credentials are never part of it."""
    return ["flower", f"--port={port}", f"--address={address}"]


def check_can_run(settings: Settings, no_auth: bool) -> None:
    if settings.embedded:
        raise InvalidInput(
            "Flower needs a broker with fanout (Redis or RabbitMQ) and the embedded SQLite broker has none; "
            "set RESEARCH_BROKER_URL, e.g. redis://127.0.0.1:6379/0"
        )
    if settings.flower_basic_auth is None and not no_auth:
        raise InvalidInput(
            "Flower would be open to anyone who can reach it: set RESEARCH_FLOWER_BASIC_AUTH=user:password, "
            "or pass --no-auth to run it without a login"
        )


def run_flower(settings: Settings, port: int, address: str, no_auth: bool) -> None:
    """Serve Flower until interrupted."""
    from research_runner.worker import create_app

    check_can_run(settings, no_auth)
    if no_auth:
        os.environ.pop(FLOWER_AUTH_VARIABLE, None)
        print("Flower runs without a login (--no-auth).", file=sys.stderr)
    else:
        assert settings.flower_basic_auth is not None
        os.environ[FLOWER_AUTH_VARIABLE] = settings.flower_basic_auth.get_secret_value()
    try:
        code = create_app(settings).start(flower_argv(port, address))
    except OSError as exc:  # typically the port is taken
        raise ServiceUnavailable(f"cannot serve Flower on {address}:{port} ({exc})") from None
    if code:
        raise ServiceUnavailable(
            f"Flower stopped with exit code {code} (broker {redact_url(settings.broker_url)}, port {port})"
        )
