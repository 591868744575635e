"""One API request budget for all workers, kept in the database (Celery's rate_limit is per worker).

A fixed one-minute window counts requests; a 429 with Retry-After pauses everyone until it passes. Each
grant is a single conditional UPDATE, so concurrent workers never over-spend.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from research_runner import db
from research_runner.models import ApiBudget
from research_runner.settings import Settings
from research_runner.status import utcnow

WINDOW = timedelta(minutes=1)
API_BUDGET_NAME = "gemini"  # the row shared by every worker


def _window(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


def acquire(settings: Settings, now: datetime | None = None) -> float:
    """Take one request from the shared budget: 0.0 if granted, else the seconds to wait before trying again."""
    now = now or utcnow()
    window = _window(now)
    not_blocked = or_(col(ApiBudget.blocked_until).is_(None), col(ApiBudget.blocked_until) <= now)
    mine = col(ApiBudget.name) == API_BUDGET_NAME
    limit = settings.api_requests_per_minute
    statements = [
        update(ApiBudget)
        .where(mine, not_blocked, col(ApiBudget.window_start) < window)
        .values(window_start=window, used=1),
        update(ApiBudget)
        .where(mine, not_blocked, col(ApiBudget.window_start) == window, col(ApiBudget.used) < (limit or 2**31 - 1))
        .values(used=col(ApiBudget.used) + 1),
    ]
    with db.session(settings) as session:
        for statement in statements:
            if session.execute(statement).rowcount:  # type: ignore[attr-defined]
                return 0.0
        budget = session.get(ApiBudget, API_BUDGET_NAME)
    if budget is None:  # the migration creates the row; put it back if someone removed it
        _ensure_row(settings, window)
        return 0.0
    resume = max(budget.blocked_until or now, window + WINDOW if budget.used >= limit > 0 else now)
    return max((resume - now).total_seconds(), 0.05)


def block(settings: Settings, seconds: float, now: datetime | None = None) -> None:
    """After a 429 with Retry-After, hold every worker's requests until it has passed."""
    until = (now or utcnow()) + timedelta(seconds=seconds)
    statement = (
        update(ApiBudget)
        .where(
            col(ApiBudget.name) == API_BUDGET_NAME,
            or_(col(ApiBudget.blocked_until).is_(None), col(ApiBudget.blocked_until) < until),
        )
        .values(blocked_until=until)
    )
    with db.session(settings) as session:
        session.execute(statement)


def _ensure_row(settings: Settings, window: datetime) -> None:
    try:
        with db.session(settings) as session:
            session.add(ApiBudget(name=API_BUDGET_NAME, window_start=window - WINDOW, used=0))
    except IntegrityError:
        pass  # another worker created it first
