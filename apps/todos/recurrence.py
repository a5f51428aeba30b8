"""Recurrence rules of todos: daily, weekly, monthly, or an RFC 5545 RRULE (python-dateutil).

What a rule may say is in ``rrules``; this module finds occurrences with bounded work. Every
search looks at most ``HORIZON_YEARS`` ahead, and dateutil is never asked to look past one
period at a time: alone, when a rule's filters match nothing (February 30th) its iterator
walks every period up to year 9999, and neither UNTIL, COUNT, ``xafter`` nor ``between``
stops it, as they are only checked against dates that match.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from dateutil.relativedelta import relativedelta
from dateutil.rrule import rrulestr

from apps.todos import rrules
from apps.todos.rrules import HORIZON_YEARS

logger = logging.getLogger(__name__)

SHORTHANDS = {"daily": "FREQ=DAILY", "weekly": "FREQ=WEEKLY", "monthly": "FREQ=MONTHLY"}
MAX_LENGTH = 500
_PROBE_START = datetime(2026, 1, 1, tzinfo=UTC)
# An INTERVAL that takes dateutil past year 9999 after one month or year: one period only.
_ONE_PERIOD = {"MONTHLY": 12 * 10_000, "YEARLY": 10_000}


def normalise(value: str) -> str:
    """Return the rule as a bare RRULE (no ``RRULE:`` prefix), or raise ``ValueError`` with a
    message for the API user."""
    rule = rrules.text(rrules.checked(_bare(value)))
    problem = _pattern_problem(rule)
    if problem:
        raise ValueError(problem)
    return rule


def next_after(rule: str, start: datetime, *, occurrence: int = 1) -> datetime | None:
    """Return the first occurrence of ``rule`` (starting at ``start``) after ``start``, or None
    when there is none within the horizon: the series ends there.

    ``start`` is the series' ``occurrence``-th todo: a ``COUNT`` counts the whole series, so
    the todo that reached it has no next one.
    """
    count = _count(rule)
    if count is not None and occurrence >= count:
        return None
    try:
        parts = rrules.checked(rule)
    except ValueError as exc:  # stored before today's limits: end the series, don't spin
        logger.warning("recurrence %r is no longer accepted (%s); its series ends", rule, exc)
        return None
    if first_within(parts, start) is None:
        logger.info("recurrence %r has nothing within the horizon of %s", rule, start)
        return None
    # dateutil has the last word (COUNT, UNTIL); it stops at that occurrence at the latest.
    return rrulestr(rule, dtstart=start).after(start)


def _bare(value: str) -> str:
    if not isinstance(value, str):
        raise ValueError("Must be daily, weekly, monthly or an RRULE string.")
    rule = SHORTHANDS.get(value.strip().lower(), value.strip())
    rule = rule.removeprefix("RRULE:").removeprefix("rrule:").upper()
    if not rule or len(rule) > MAX_LENGTH:
        raise ValueError(f"Must be 1 to {MAX_LENGTH} characters.")
    if "DTSTART" in rule or "\n" in rule:
        raise ValueError("Give only the RRULE part; the todo's due date is its start.")
    return rule


@lru_cache(maxsize=1024)  # the serializer and the aggregate check the same rule in turn
def _pattern_problem(rule: str) -> str | None:
    """Return why a checked rule is unusable (for the API user), or None if it is usable."""
    try:
        rrulestr(rule, dtstart=_PROBE_START)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        logger.info("recurrence %r refused by dateutil: %r", rule, exc)
        return f"This recurrence rule can't be read; write it like {rrules.EXAMPLE}."
    # The pattern, whatever phase a due date gives its INTERVAL: does it match at all?
    if first_within({**rrules.checked(rule), "INTERVAL": "1"}, _PROBE_START) is None:
        return (
            f"This rule never repeats within {HORIZON_YEARS} years "
            "(for example, February has no 30th)."
        )
    return None


def first_within(parts: dict[str, str], start: datetime) -> datetime | None:
    """Return the first occurrence of a checked rule after ``start`` (COUNT and UNTIL left
    aside) if it falls within the horizon, else None.

    Bounded work: DAILY and WEEKLY rules are checked day by day; MONTHLY and YEARLY ones are
    asked of dateutil one month or year (one period) at a time.
    """
    end = _horizon_end(start)
    try:
        if parts["FREQ"] in ("DAILY", "WEEKLY"):
            return _first_day(parts, start, end)
        return _first_in_periods(parts, start, end)
    except OverflowError:  # the search reached year 9999
        return None


def _horizon_end(start: datetime) -> datetime:
    try:
        return start + relativedelta(years=HORIZON_YEARS)
    except (OverflowError, ValueError):
        return start.replace(year=9999, month=12, day=31, hour=23, minute=59, second=59)


def _first_day(parts: dict[str, str], start: datetime, end: datetime) -> datetime | None:
    at, matches = _time_of_day(parts, start), _day_filter(parts, start)
    for day in _days(parts, start):
        candidate = datetime.combine(day, at)
        if candidate > end:
            return None
        if candidate > start and matches(day):
            return candidate
    return None  # pragma: no cover - _days never ends


def _days(parts: dict[str, str], start: datetime) -> Iterator[date]:
    """Yield the days of the rule's periods in order, as dateutil steps through them."""
    day, interval = start.date(), int(parts.get("INTERVAL", "1"))
    if parts["FREQ"] == "DAILY":
        while True:
            yield day
            day += timedelta(days=interval)
    week_start = rrules.WEEKDAYS.index(parts.get("WKST", "MO"))
    week = day - timedelta(days=(day.weekday() - week_start) % 7)
    while True:
        yield from (week + timedelta(days=offset) for offset in range(7))
        week += timedelta(weeks=interval)


def _day_filter(parts: dict[str, str], start: datetime) -> Callable[[date], bool]:
    """Return whether a day passes a DAILY or WEEKLY rule's BYMONTH, BYMONTHDAY and BYDAY."""
    months, monthdays = (
        set(rrules.numbers(name, parts[name])) if name in parts else None
        for name in ("BYMONTH", "BYMONTHDAY")
    )
    weekdays = rrules.weekdays(parts["BYDAY"], numbered=False) if "BYDAY" in parts else None
    if weekdays is None and parts["FREQ"] == "WEEKLY":
        weekdays = {start.weekday()}  # dateutil's default: the start's weekday

    def matches(day: date) -> bool:
        if months is not None and day.month not in months:
            return False
        if monthdays is not None:
            from_end = day.day - calendar.monthrange(day.year, day.month)[1] - 1
            if day.day not in monthdays and from_end not in monthdays:
                return False
        return weekdays is None or day.weekday() in weekdays

    return matches


def _time_of_day(parts: dict[str, str], start: datetime) -> time:
    hour, minute, second = (int(value) for value in _times(parts, start).values())
    return time(hour, minute, second, tzinfo=start.tzinfo)


def _times(parts: dict[str, str], start: datetime) -> dict[str, str]:
    """Return BYHOUR, BYMINUTE and BYSECOND: the rule's, else dateutil's default, the start's."""
    own = (start.hour, start.minute, start.second)
    return {name: parts.get(name, str(n)) for name, n in zip(rrules.TIME_PARTS, own, strict=True)}


def _first_in_periods(parts: dict[str, str], start: datetime, end: datetime) -> datetime | None:
    one_period = rrulestr(_one_period_rule(parts, start), dtstart=start)
    months = set(rrules.numbers("BYMONTH", parts["BYMONTH"])) if "BYMONTH" in parts else None
    for period_start in _period_starts(parts, start, end):
        if parts["FREQ"] == "MONTHLY" and months and period_start.month not in months:
            continue  # nothing in a month the rule leaves out: no need to ask
        found = one_period.replace(dtstart=period_start).after(start)
        if found is not None:
            return found if found <= end else None
    return None


def _one_period_rule(parts: dict[str, str], start: datetime) -> str:
    """Return a MONTHLY or YEARLY rule that dateutil ends after its first period.

    Whatever dateutil would take from ``start`` (the day, month and time) is written out, so
    the rule means the same from any period's start.
    """
    rule = {k: v for k, v in parts.items() if k not in ("COUNT", "UNTIL", "INTERVAL")}
    if not any(name in parts for name in rrules.DAY_FILTERS):
        rule["BYMONTHDAY"] = str(start.day)
        if parts["FREQ"] == "YEARLY":
            rule.setdefault("BYMONTH", str(start.month))
    rule.update(_times(parts, start))
    rule["INTERVAL"] = str(_ONE_PERIOD[parts["FREQ"]])
    return rrules.text(rule)


def _period_starts(parts: dict[str, str], start: datetime, end: datetime) -> Iterator[datetime]:
    """Yield ``start``, then the start of every INTERVAL-th month or year after it, to ``end``."""
    yield start
    interval, yearly = int(parts.get("INTERVAL", "1")), parts["FREQ"] == "YEARLY"
    first = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    first = first.replace(month=1) if yearly else first
    step = relativedelta(years=interval) if yearly else relativedelta(months=interval)
    period = first + step
    while period <= end:
        yield period
        period += step


def _count(rule: str) -> int | None:
    for part in rule.split(";"):
        name, _, value = part.partition("=")
        if name == "COUNT" and value.isdigit():
            return int(value)
    return None
