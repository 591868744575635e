"""Cron schedules kept in the database; each due time creates exactly one batch.

Firing is one transaction: move `next_run_at` forward only if it still holds the due time being fired, and
store the batch with it. A second scheduler, or a retried tick, finds the time already moved and fires nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from research_runner import batches, db, display
from research_runner.batchfile import Item
from research_runner.constants import IDEMPOTENCY_KEY_MAX_CHARS, MAX_QUESTION_CHARS
from research_runner.exceptions import InvalidInput, JobNotFound
from research_runner.models import Batch, Schedule
from research_runner.settings import Settings
from research_runner.status import utcnow

PLACEHOLDERS = frozenset({"date", "week"})
# The longest value each placeholder takes: ISO dates and weeks always write four-digit years.
LONGEST_VALUES = {"date": "9999-12-31", "week": "9999-W53"}
# A template is literal text between these tokens: escaped braces, one {field}, or a lone brace.
TEMPLATE_TOKEN = re.compile(r"(\{\{|\}\}|\{[^{}]*\}|[{}])")
QUOTED_MAX_CHARS = 80

log = logging.getLogger(__name__)
# Firings that may fail in a row before a schedule is paused (it would fail every tick otherwise).
MAX_FAILURES = 3
# Without catch-up, a firing more than this late (the scheduler was down) is skipped, not run.
MISSED_GRACE = timedelta(minutes=1)
NAME_MAX_CHARS = 100


def check_cron(expression: str) -> str:
    """The expression, normalised; InvalidInput if it is malformed or never fires (e.g. "0 9 30 2 *")."""
    from croniter import croniter  # imported where cron is read: listing jobs has no use for it

    expression = " ".join(expression.split())
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise InvalidInput(f'invalid cron expression {expression!r}; use five fields, e.g. "0 9 * * 1"')
    try:
        croniter(expression, utcnow()).get_next(datetime)
    except ValueError:  # CroniterBadDateError: no matching date in the years croniter searches
        raise InvalidInput(
            f"cron expression {expression!r} never fires: no date matches it, e.g. 30 February"
        ) from None
    return expression


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown timezone {name!r}; use an IANA name such as Europe/Paris or UTC") from None


def tokenise(question: str) -> list[str]:
    """The template as tokens, in order: literal text, "{{", "}}", "{field}" or a lone "{" or "}"."""
    return [part for part in TEMPLATE_TOKEN.split(question) if part]


def check_placeholders(question: str) -> None:
    """InvalidInput unless every field is a bare {date} or {week}; literal braces are written {{ and }}.

    Format specs, conversions, indexes and positional fields ({date:>9000}, {week!r}, {date[0]}, {0}, {}) are
    refused: expansion is plain replacement, never str.format.
    """
    for token in tokenise(question):
        if token in ("{", "}"):
            raise InvalidInput(f"a lone {token} in {_quoted(question)}; write literal braces as {{{{ and }}}}")
        field = token[1:-1] if token not in ("{{", "}}") and token.startswith("{") else None
        if field is None or field in PLACEHOLDERS:
            continue
        if re.split(r"[:!\[.]", field, maxsplit=1)[0] in PLACEHOLDERS:
            raise InvalidInput(
                f"placeholder {token} in {_quoted(question)} has a format or conversion; write {{date}} or {{week}}"
            )
        raise InvalidInput(f"unknown placeholder {token} in {_quoted(question)}; use {{date}} or {{week}}")


def check_expansion(template: str, question: str) -> None:
    """InvalidInput unless `question`, expanded from `template`, obeys the limits of a submitted question."""
    text = question.strip()
    if not text:
        raise InvalidInput(f"the question {_quoted(template)} is empty once expanded")
    if len(text) > MAX_QUESTION_CHARS:
        raise InvalidInput(
            f"the question {_quoted(template)} expands to up to {len(text)} characters; the limit is "
            f"{MAX_QUESTION_CHARS}"
        )


def _quoted(question: str) -> str:
    return repr(display.cut(question, QUOTED_MAX_CHARS))


def expand_question(question: str, values: Mapping[str, str]) -> str:
    """{{ and }} as braces, {date} and {week} as their values, anything else as written; never raises."""
    return "".join(_expand_token(token, values) for token in tokenise(question))


def _expand_token(token: str, values: Mapping[str, str]) -> str:
    if token in ("{{", "}}"):
        return token[0]
    if len(token) > 2 and token[0] == "{" and token[-1] == "}":
        return values.get(token[1:-1], token)
    return token


def next_after(cron: str, timezone: str, after: datetime) -> datetime:
    """The first firing after `after`, in its timezone.

    When clocks go back, an hour's wall times happen twice. Like cron, a schedule at a fixed hour fires at the
    first of the two only (a second paid run on the same day would be a surprise); one whose hour or minute is
    `*` fires at both. Times skipped when clocks go forward fire at the first valid time after the gap.
    """
    return _walk(cron, timezone, after, forward=True)


def latest_due(cron: str, timezone: str, now: datetime) -> datetime:
    """The last firing strictly before `now`, by the same rules as next_after."""
    return _walk(cron, timezone, now, forward=False)


def _walk(cron: str, timezone: str, start: datetime, forward: bool) -> datetime:
    from croniter import croniter  # imported where cron is read: listing jobs has no use for it

    zone, moment = ZoneInfo(timezone), start
    while True:
        times = croniter(cron, moment.astimezone(zone))
        moment = times.get_next(datetime) if forward else times.get_prev(datetime)
        if not _second_pass(cron, moment, zone):
            return moment.astimezone(start.tzinfo)  # type: ignore[no-any-return]


def _second_pass(cron: str, moment: datetime, zone: ZoneInfo) -> bool:
    """True for the second occurrence of a repeated wall time, when the schedule's hour and minute are fixed."""
    minute, hour = cron.split()[:2]
    fixed = not minute.startswith("*") and not hour.startswith("*")
    return fixed and moment.astimezone(UTC).astimezone(zone).fold == 1


def expand(items: list[Item], due: datetime, timezone: str) -> list[Item]:
    values = placeholder_values(due, timezone)
    return [Item(expand_question(i.question, values), i.agent, i.tags, i.idempotency_key) for i in items]


def placeholder_values(due: datetime, timezone: str) -> dict[str, str]:
    local = due.astimezone(ZoneInfo(timezone))
    year, week, _ = local.isocalendar()
    return {"date": local.date().isoformat(), "week": f"{year}-W{week:02d}"}


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
        check_expansion(item.question, expand_question(item.question, LONGEST_VALUES))
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
    """Fire once now, outside the cron times; the next scheduled time stays as it was.

    Raises InvalidInput if an expanded question breaks a question's limits (a schedule stored before they were
    checked), and batches.NothingToSubmit if this very firing was already stored.
    """
    schedule, now = find(settings, name), utcnow()
    with db.session(settings) as session:
        batch, _ = _batch_for(settings, session, schedule, now, run_now=True)
    return batch


def fire_due(settings: Settings, now: datetime | None = None) -> list[Batch]:
    """Fire every schedule whose time has come, once per due time, and move it to its next time.

    Returns the batches stored. A schedule that fails is logged with its traceback and skipped; fire_each also
    says which failed.
    """
    return fire_each(settings, now).done


def fire_each(settings: Settings, now: datetime | None = None) -> batches.Outcome[Batch]:
    """Like fire_due, one schedule at a time: one that raises does not stop the others.

    Returns the batches stored, and a batches.Failure (schedule id, name, error) for each schedule that raised.
    """
    now = now or utcnow()
    with db.session(settings) as session:
        due = list(
            session.exec(select(Schedule).where(col(Schedule.paused).is_(False), col(Schedule.next_run_at) <= now))
        )
    outcome: batches.Outcome[Batch] = batches.Outcome()
    for schedule in due:
        try:
            batch = _fire(settings, schedule, now)
        except Exception as exc:
            log.exception("schedule %s failed to fire", schedule.name)
            failed = batches.failure(schedule.id, schedule.name, exc)
            outcome.failures.append(failed)
            _record_failure(settings, schedule, failed.error)
        else:
            outcome.done += [batch] if batch else []
            if batch and schedule.failures:
                _set(settings, schedule, failures=0, last_error=None)
    return outcome


def _record_failure(settings: Settings, schedule: Schedule, error: str) -> None:
    """Keep the reason on the schedule; after MAX_FAILURES firings in a row fail, pause it and say why."""
    failures = schedule.failures + 1
    if failures < MAX_FAILURES:
        _set(settings, schedule, failures=failures, last_error=error)
        return
    log.error("schedule %s paused after %d failed firings: %s", schedule.name, failures, error)
    _set(settings, schedule, failures=failures, paused=True,
         last_error=f"paused after {failures} failed firings in a row; last: {error}")  # fmt: skip


def _set(settings: Settings, schedule: Schedule, **values: object) -> None:
    with db.session(settings) as session:
        session.execute(update(Schedule).where(col(Schedule.id) == schedule.id).values(**values))


def _fire(settings: Settings, schedule: Schedule, now: datetime) -> Batch | None:
    """The batch of the schedule's due time, or None if it is not to run (claimed elsewhere, missed, stored).

    Questions that break a limit raise InvalidInput once the due time is claimed: that time is spent (it would
    fail the same way on every tick) and the caller records the failure.
    """
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
            fire_at = _firing_time(schedule, due, now)
            try:
                return _batch_for(settings, session, schedule, fire_at)[0] if fire_at else None
            except batches.NothingToSubmit:
                return None  # every key of this firing is known: it was stored already
            except InvalidInput as exc:
                problem = exc  # leave the session normally, so the claim commits
    except IntegrityError:
        return None  # the same firing's idempotency keys exist: it was already stored
    raise problem


def _firing_time(schedule: Schedule, due: datetime, now: datetime) -> datetime | None:
    if now - due <= MISSED_GRACE:
        return due
    if not schedule.catch_up:
        return None  # missed while down, and this schedule does not catch up
    # Caught up once, as the latest missed time, so {date} and {week} name the recent period.
    return latest_due(schedule.cron, schedule.timezone, now)


def _batch_for(
    settings: Settings, session: Session, schedule: Schedule, due: datetime, run_now: bool = False
) -> tuple[Batch, int]:
    tag = f"run-now:{due.isoformat()}" if run_now else due.isoformat()
    templates = items_of(schedule)
    items = [
        Item(i.question, i.agent, i.tags, firing_key(schedule.id, tag, n, t.idempotency_key))
        for n, (t, i) in enumerate(zip(templates, expand(templates, due, schedule.timezone), strict=True))
    ]
    for template, item in zip(templates, items, strict=True):
        check_expansion(template.question, item.question)
    local = due.astimezone(ZoneInfo(schedule.timezone))
    return batches.add(
        settings,
        session,
        f"{schedule.name} {local:%Y-%m-%d %H:%M}",
        items,
        schedule.agent,
        source=f"schedule {schedule.name}",
        schedule_id=schedule.id,
        due_at=due,
    )


def firing_key(schedule_id: str, tag: str, number: int, item_key: str | None) -> str:
    """The idempotency key of item `number` in one firing (`tag`: its due time, or run-now and the time).

    The item's own key is kept when it has one, scoped to the schedule and firing: each firing must ask again,
    so the key alone would make every firing after the first skip the item, while in the scoped key it still
    names the item the job came from and stays unique within the firing (a batch file repeats no key). Too long
    for the column, it is replaced by its SHA-256. Items without a key are numbered; "key:" and "sha256:" keep
    the three forms apart.
    """
    if item_key is None:
        return f"schedule:{schedule_id}:{tag}:{number}"
    key = f"schedule:{schedule_id}:{tag}:key:{item_key}"
    if len(key) <= IDEMPOTENCY_KEY_MAX_CHARS:
        return key
    return f"schedule:{schedule_id}:{tag}:sha256:{hashlib.sha256(item_key.encode()).hexdigest()}"


def failing(settings: Settings) -> list[Schedule]:
    """Schedules whose last firing failed."""
    with db.session(settings) as session:
        return list(session.exec(select(Schedule).where(col(Schedule.last_error).is_not(None))))
