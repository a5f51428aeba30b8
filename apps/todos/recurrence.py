"""Recurrence rules of todos: daily, weekly, monthly, or an RFC 5545 RRULE (python-dateutil)."""

from __future__ import annotations

from datetime import UTC, datetime

from dateutil.rrule import rrulestr

SHORTHANDS = {"daily": "FREQ=DAILY", "weekly": "FREQ=WEEKLY", "monthly": "FREQ=MONTHLY"}
MAX_LENGTH = 500
_PROBE_START = datetime(2026, 1, 1, tzinfo=UTC)


def normalise(value: str) -> str:
    """Return the rule as a bare RRULE (no ``RRULE:`` prefix), or raise ``ValueError``."""
    if not isinstance(value, str):
        raise ValueError("Must be daily, weekly, monthly or an RRULE string.")
    rule = SHORTHANDS.get(value.strip().lower(), value.strip())
    rule = rule.removeprefix("RRULE:").removeprefix("rrule:").upper()
    if not rule or len(rule) > MAX_LENGTH:
        raise ValueError(f"Must be 1 to {MAX_LENGTH} characters.")
    if "DTSTART" in rule or "\n" in rule:
        raise ValueError("Give only the RRULE part; the todo's due date is its start.")
    try:
        parsed = rrulestr(rule, dtstart=_PROBE_START)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"Not a valid RRULE: {exc}") from None
    if parsed.after(_PROBE_START) is None and "COUNT" not in rule and "UNTIL" not in rule:
        raise ValueError("The rule never produces an occurrence.")
    return rule


def next_after(rule: str, start: datetime, *, occurrence: int = 1) -> datetime | None:
    """Return the first occurrence of ``rule`` (starting at ``start``) after ``start``.

    ``start`` is the series' ``occurrence``-th todo: a ``COUNT`` counts the whole series, so
    the todo that reached it has no next one.
    """
    count = _count(rule)
    if count is not None and occurrence >= count:
        return None
    return rrulestr(rule, dtstart=start).after(start)


def _count(rule: str) -> int | None:
    for part in rule.split(";"):
        name, _, value = part.partition("=")
        if name == "COUNT" and value.isdigit():
            return int(value)
    return None
