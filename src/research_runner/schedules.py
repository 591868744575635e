"""Cron schedules kept in the database; each due time creates exactly one batch.

Firing is one transaction: move `next_run_at` forward only if it still holds the due time being fired, and
store the batch with it. A second scheduler, or a retried tick, finds the time already moved and fires nothing.
"""

from __future__ import annotations

import json
import string
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from research_runner import batches, db
from research_runner.batchfile import Item
from research_runner.exceptions import InvalidInput, JobNotFound
from research_runner.models import Batch, Schedule, utcnow
from research_runner.settings import Settings

PLACEHOLDERS = frozenset({"date", "week"})
# Without catch-up, a firing more than this late (the scheduler was down) is skipped, not run.
MISSED_GRACE = timedelta(minutes=1)
NAME_MAX_CHARS = 100


def check_cron(expression: str) -> str:
    expression = " ".join(expression.split())
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise InvalidInput(f'invalid cron expression {expression!r}; use five fields, e.g. "0 9 * * 1"')
    return expression


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown timezone {name!r}; use an IANA name such as Europe/Paris or UTC") from None


def check_placeholders(question: str) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(question) if name is not None}
    except ValueError as exc:
        raise InvalidInput(f"bad braces in {question!r} ({exc}); write literal braces as {{{{ and }}}}") from None
    unknown = fields - PLACEHOLDERS
    if unknown:
        raise InvalidInput(f"unknown placeholder {{{sorted(unknown)[0]}}} in {question!r}; use {{date}} or {{week}}")


def next_after(cron: str, timezone: str, after: datetime) -> datetime:
    local = after.astimezone(ZoneInfo(timezone))
    return croniter(cron, local).get_next(datetime).astimezone(after.tzinfo)  # type: ignore[no-any-return]


def latest_due(cron: str, timezone: str, now: datetime) -> datetime:
    local = now.astimezone(ZoneInfo(timezone))
    return croniter(cron, local).get_prev(datetime).astimezone(now.tzinfo)  # type: ignore[no-any-return]


def expand(items: list[Item], due: datetime, timezone: str) -> list[Item]:
    local = due.astimezone(ZoneInfo(timezone))
    year, week, _ = local.isocalendar()
    values = {"date": local.date().isoformat(), "week": f"{year}-W{week:02d}"}
    return [Item(i.question.format(**values), i.agent, i.tags, i.idempotency_key) for i in items]


def add(
    settings: Settings,
    name: str,
    cron: str,
    items: list[Item],
    agent: str,
    timezone: str = "UTC",
    catch_up: bool = True,
) -> Schedule:
    if not name.strip() or len(name) > NAME_MAX_CHARS:
        raise InvalidInput(f"a schedule name needs 1 to {NAME_MAX_CHARS} characters")
    cron, _ = check_cron(cron), check_timezone(timezone)
    batches.require_items(items)
    for item in items:
        check_placeholders(item.question)
    schedule = Schedule(
        name=name.strip(),
        cron=cron,
        timezone=timezone,
        agent=agent,
        catch_up=catch_up,
        items=json.dumps([i.to_json() for i in items]),
        next_run_at=next_after(cron, timezone, utcnow()),
    )
    try:
        with db.session(settings) as session:
            session.add(schedule)
    except IntegrityError:
        raise InvalidInput(f"a schedule named {name!r} already exists; pick another name or remove it first") from None
    return schedule


def items_of(schedule: Schedule) -> list[Item]:
    return [
        Item(d["question"], d.get("agent"), tuple(d.get("tags") or ()), d.get("idempotency_key"))
        for d in json.loads(schedule.items)
    ]


def all_schedules(settings: Settings) -> list[Schedule]:
    with db.session(settings) as session:
        return list(session.exec(select(Schedule).order_by(col(Schedule.name))))


def find(settings: Settings, name: str) -> Schedule:
    with db.session(settings) as session:
        schedule = session.exec(select(Schedule).where(col(Schedule.name) == name)).first()
    if schedule is None:
        raise JobNotFound(f"no schedule named {name!r}; `research schedule list` shows them")
    return schedule


def set_paused(settings: Settings, name: str, paused: bool) -> Schedule:
    schedule = find(settings, name)
    values: dict[str, object] = {"paused": paused}
    if not paused:  # times missed while paused are not owed: start again from now
        values["next_run_at"] = next_after(schedule.cron, schedule.timezone, utcnow())
    with db.session(settings) as session:
        session.execute(update(Schedule).where(col(Schedule.id) == schedule.id).values(**values))
    return find(settings, name)


def remove(settings: Settings, name: str) -> Schedule:
    schedule = find(settings, name)
    with db.session(settings) as session:
        session.execute(delete(Schedule).where(col(Schedule.id) == schedule.id))
    return schedule


def run_now(settings: Settings, name: str) -> Batch:
    """Fire once now, outside the cron times; the next scheduled time stays as it was."""
    schedule, now = find(settings, name), utcnow()
    with db.session(settings) as session:
        batch, _ = _batch_for(session, schedule, now, run_now=True)
    return batch


def fire_due(settings: Settings, now: datetime | None = None) -> list[Batch]:
    """Fire every schedule whose time has come, once per due time, and move it to its next time."""
    now = now or utcnow()
    with db.session(settings) as session:
        due = list(
            session.exec(select(Schedule).where(col(Schedule.paused).is_(False), col(Schedule.next_run_at) <= now))
        )
    fired = []
    for schedule in due:
        batch = _fire(settings, schedule, now)
        if batch is not None:
            fired.append(batch)
    return fired


def _fire(settings: Settings, schedule: Schedule, now: datetime) -> Batch | None:
    due = schedule.next_run_at
    claim = (
        update(Schedule)
        .where(col(Schedule.id) == schedule.id, col(Schedule.next_run_at) == due, col(Schedule.paused).is_(False))
        .values(next_run_at=next_after(schedule.cron, schedule.timezone, now), last_run_at=due)
    )
    try:
        with db.session(settings) as session:
            if not session.execute(claim).rowcount:  # type: ignore[attr-defined]
                return None  # another scheduler fired this due time
            if now - due <= MISSED_GRACE:
                return _batch_for(session, schedule, due)[0]
            if not schedule.catch_up:
                return None  # missed while down, and this schedule does not catch up
            # Caught up once, as the latest missed time, so {date} and {week} name the recent period.
            return _batch_for(session, schedule, latest_due(schedule.cron, schedule.timezone, now))[0]
    except IntegrityError:
        return None  # the same firing's idempotency keys exist: it was already stored


def _batch_for(session: Session, schedule: Schedule, due: datetime, run_now: bool = False) -> tuple[Batch, int]:
    tag = f"run-now:{due.isoformat()}" if run_now else due.isoformat()
    items = [
        Item(i.question, i.agent, i.tags, f"schedule:{schedule.id}:{tag}:{n}")
        for n, i in enumerate(expand(items_of(schedule), due, schedule.timezone))
    ]
    local = due.astimezone(ZoneInfo(schedule.timezone))
    return batches.add(
        session,
        f"{schedule.name} {local:%Y-%m-%d %H:%M}",
        items,
        schedule.agent,
        source=f"schedule {schedule.name}",
        schedule_id=schedule.id,
        due_at=due,
    )
