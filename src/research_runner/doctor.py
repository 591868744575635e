"""`research doctor`: check every piece the runner depends on, one line each, with the fix for a failure.

Checks never print the API key or a password: URLs are shown redacted, the key only as present or not.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError

from research_runner import batches, db, leases, schedules, store
from research_runner.exceptions import GatewayError, PermanentError, ServiceUnavailable
from research_runner.settings import Settings, redact_url
from research_runner.status import utcnow

if TYPE_CHECKING:
    from celery import Celery

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"
PING_TIMEOUT = 2.0
API_TIMEOUT = 10.0
# A job due this long without being handed out means no dispatch tick runs (ticks are 1 s, leases 60 s).
OVERDUE_SECONDS = 90.0


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # OK, FAIL, WARN or SKIP
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.state == FAIL

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "state": self.state, "detail": self.detail, "fix": self.fix}

    def line(self) -> str:
        hint = f"; {'fix' if self.failed else 'note'}: {self.fix}" if self.fix else ""
        return f"{self.state:<4} {self.name}: {self.detail}{hint}"


def run_checks(settings: Settings) -> Iterator[Check]:
    """Each check as soon as it is done, so a slow one shows where it is."""
    from research_runner.worker import create_app

    app = create_app(settings)
    yield _safe("settings", lambda: check_settings(settings))
    broker = _safe("broker", lambda: check_broker(settings, app))
    yield broker
    database = _safe("database", lambda: check_database(settings))
    yield database
    key = _safe("api key", lambda: check_api_key(settings))
    yield key
    yield (
        _safe("api", lambda: check_api(settings)) if not key.failed else Check("api", SKIP, "no API key to try it with")
    )
    yield _safe("reports", lambda: check_reports(settings))
    yield _safe("worker", lambda: check_worker(settings, app, not broker.failed, not database.failed))
    if database.state != OK:
        return  # the checks below read tables of the current schema
    yield from _safe_many("work", lambda: check_work(settings))
    from research_runner.webhook_doctor import webhook_checks

    yield from _safe_many("webhooks", lambda: list(webhook_checks(settings)))


def _safe(name: str, check: Callable[[], Check]) -> Check:
    """A check that raises is a FAIL line of its own: one broken piece never hides the others."""
    return _safe_many(name, lambda: [check()])[0]


def _safe_many(name: str, checks: Callable[[], list[Check]]) -> list[Check]:
    try:
        return checks()
    except Exception as exc:
        return [Check(name, FAIL, f"the check could not run: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")]


def check_work(settings: Settings) -> list[Check]:
    """Work that waits on something to be fixed: reports not written, schedules and digests that fail."""
    found = []
    unwritten = store.unwritten_reports(settings)
    if unwritten:
        ids = ", ".join(job.short_id for job in unwritten[:10])
        found.append(Check("reports waiting", FAIL, f"{len(unwritten)} finished job(s) wait for their report file "
                           f"({ids}): {unwritten[0].report_error}", "make RESEARCH_REPORTS_DIR writable (and not "
                           "full); the dispatch tick then writes them"))  # fmt: skip
    for schedule in schedules.failing(settings):
        state = FAIL if schedule.paused else WARN
        found.append(
            Check(
                f"schedule {schedule.name}",
                state,
                f"{schedule.failures} failed firing(s): {schedule.last_error}",
                f"`research schedule show {schedule.name}`, fix it, then `research schedule resume`"
                if schedule.paused
                else "it is tried again at its next time",
            )
        )
    for batch in batches.failing_digests(settings):
        found.append(Check(f"batch {batch.short_id}", WARN, f"its digest could not be written: {batch.digest_error}",
                           "the dispatch tick tries again every tick"))  # fmt: skip
    return found or [Check("work", OK, "no report, schedule or digest waits on a fix")]


def check_settings(settings: Settings) -> Check:
    # Invalid settings never get here: loading them fails first, naming the variable.
    embedded = " (embedded: one machine only)" if settings.embedded else ""
    return Check(
        "settings",
        OK,
        f"broker {redact_url(settings.broker_url)}{embedded}, "
        f"database {redact_url(settings.database_url)}, reports {settings.reports_dir}, "
        f"agent {settings.agent}",
    )


def check_broker(settings: Settings, app: Celery) -> Check:
    from research_runner.worker import check_broker as reach_broker

    try:
        settings.ensure_dirs()  # the embedded broker's file lives in the data folder
        reach_broker(app, settings)
    except ServiceUnavailable as exc:
        return Check(
            "broker",
            FAIL,
            str(exc).rsplit("; ", 1)[0],
            "start the broker (e.g. `redis-server`) or correct RESEARCH_BROKER_URL",
        )
    return Check("broker", OK, f"{redact_url(settings.broker_url)} answers")


def check_database(settings: Settings) -> Check:
    url = redact_url(settings.database_url)
    try:
        engine = db.get_engine(settings.database_url)
        current, head = db.current_revision(engine), db.head_revision(engine)
    except (OperationalError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return Check(
            "database",
            FAIL,
            f"cannot use {url} ({reason})",
            "start the database server or correct RESEARCH_DATABASE_URL",
        )
    if current == head:
        return Check("database", OK, f"{url}, schema at revision {head}")
    if current is None:
        return Check(
            "database",
            WARN,
            f"{url} has no schema yet",
            "it is created on first use, or now with `research db upgrade`",
        )
    return Check(
        "database", FAIL, f"{url}: schema at revision {current}, this version needs {head}", "run `research db upgrade`"
    )


def check_api_key(settings: Settings) -> Check:
    if settings.api_key is None:
        return Check("api key", FAIL, "not set", "set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment")
    return Check("api key", OK, "set (not shown)")


def check_api(settings: Settings) -> Check:
    """A GET of an interaction that cannot exist: 404 means the API answers and accepts the key."""
    from research_runner.gateway import Gateway  # the SDK is imported only when the API is asked

    where = settings.gemini_base_url or "Google's Interactions API"
    quick = settings.model_copy(
        update={"get_attempts": 1, "request_timeout": min(settings.request_timeout, API_TIMEOUT)}
    )
    try:
        Gateway(quick).check_access()
    except PermanentError as exc:
        return Check(
            "api",
            FAIL,
            f"{where} refused the request ({exc})",
            "check GEMINI_API_KEY (and RESEARCH_GEMINI_BASE_URL if set)",
        )
    except GatewayError as exc:
        return Check(
            "api",
            FAIL,
            f"cannot reach {where} ({exc})",
            "check the network, or RESEARCH_GEMINI_BASE_URL and that the emulator runs",
        )
    return Check("api", OK, f"{where} answers and accepts the key")


def check_reports(settings: Settings) -> Check:
    folder = settings.reports_dir.resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-") as probe:
            probe.write(b"ok")
    except OSError as exc:
        return Check(
            "reports",
            FAIL,
            f"cannot write to {folder} ({exc.strerror or exc})",
            "give this user write access to the folder, or set RESEARCH_REPORTS_DIR",
        )
    return Check("reports", OK, f"{folder} is writable")


def check_worker(settings: Settings, app: Celery, broker_ok: bool, db_ok: bool = True) -> Check:
    if settings.embedded:
        return _embedded_worker(settings) if db_ok else Check("worker", SKIP, "the database cannot be read")
    if not broker_ok:
        return Check("worker", SKIP, "the broker cannot be reached, so no worker can be asked")
    try:
        replies = app.control.ping(timeout=PING_TIMEOUT) or []
    except (BrokerError, OSError) as exc:
        return Check("worker", FAIL, f"could not ask the workers ({exc})", "check the broker")
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return Check(
            "worker",
            FAIL,
            f"no worker answered within {PING_TIMEOUT:g} s",
            "start one with `research worker` (or `docker compose up -d worker`)",
        )
    return Check("worker", OK, f"{len(names)} answered: {', '.join(names)}")


def _embedded_worker(settings: Settings) -> Check:
    """The embedded broker cannot be asked (no broadcast): judge by whether due jobs are handed out."""
    count, oldest = leases.overdue(settings, utcnow() - timedelta(seconds=OVERDUE_SECONDS))
    if count:
        late = (utcnow() - oldest).total_seconds() if oldest else 0.0
        return Check("worker", FAIL, f"{count} job(s) have been due for up to {late:.0f} s and nobody handed them "
                     "out: no worker or scheduler is running", "start one with `research worker`")  # fmt: skip
    return Check("worker", WARN, "no job is overdue, but the embedded broker cannot be asked whether a worker "
                 "runs", "`research worker` runs one; `research submit` jobs wait until it does")  # fmt: skip
