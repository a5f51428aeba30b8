"""What a todo's RRULE may say: its parts, their values, and the limits of a todo's rhythm.

A todo repeats at most once a day (FREQ=DAILY, WEEKLY, MONTHLY or YEARLY, one time of day)
and at least once every ``HORIZON_YEARS`` years. HOURLY is refused with SECONDLY and
MINUTELY: each occurrence is a todo someone completes before the next exists, so a
sub-daily rhythm is what reminders are for, and a day-granular rule keeps every search
for an occurrence to at most a few thousand days. Every message is for the API user.
"""

from __future__ import annotations

import re

HORIZON_YEARS = 5
FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
# The largest INTERVAL of each frequency that still repeats within the horizon.
MAX_INTERVAL = {
    "DAILY": 365 * HORIZON_YEARS,
    "WEEKLY": 52 * HORIZON_YEARS,
    "MONTHLY": 12 * HORIZON_YEARS,
    "YEARLY": HORIZON_YEARS,
}
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
EXAMPLE = "FREQ=WEEKLY;BYDAY=MO,WE"
# name: (lowest, highest, whether -highest..-1 may count from the end)
NUMBER_LISTS = {
    "BYMONTH": (1, 12, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYSETPOS": (1, 366, True),
    "BYHOUR": (0, 23, False),
    "BYMINUTE": (0, 59, False),
    "BYSECOND": (0, 59, False),
}
PARTS = ("FREQ", "INTERVAL", "COUNT", "UNTIL", "WKST", "BYDAY", *NUMBER_LISTS)
DAY_FILTERS = ("BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY")
TIME_PARTS = ("BYHOUR", "BYMINUTE", "BYSECOND")
# RFC 5545 3.3.10 limits these to some frequencies; BYSETPOS is limited here too: a day or a
# week holds at most one time of a todo, and DAILY and WEEKLY rules are searched day by day.
_ONLY_WITH = {
    "BYWEEKNO": ("YEARLY",),
    "BYYEARDAY": ("YEARLY",),
    "BYMONTHDAY": ("DAILY", "MONTHLY", "YEARLY"),
    "BYSETPOS": ("MONTHLY", "YEARLY"),
}
_NUMBER = re.compile(r"[+-]?\d{1,3}")
_WEEKDAY = re.compile(r"([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_UNTIL = re.compile(r"\d{8}T\d{6}Z")
_WHOLE = re.compile(r"\d{1,6}")


def checked(rule: str) -> dict[str, str]:
    """Return the parts of a bare RRULE by name, in order, or raise ``ValueError``."""
    parts = _parts(rule)
    freq = _frequency(parts)
    for name, value in parts.items():
        allowed = _ONLY_WITH.get(name, FREQUENCIES)
        if freq not in allowed:
            raise ValueError(f"{name} can only be used with FREQ={_one_of(allowed)}.")
        _check(name, value, freq)
    if "COUNT" in parts and "UNTIL" in parts:
        raise ValueError("Give COUNT or UNTIL, not both.")
    if "BYWEEKNO" in parts and re.search(r"\d", parts.get("BYDAY", "")):
        raise ValueError("Numbered weekdays like 1MO can't be combined with BYWEEKNO.")
    return parts


def text(parts: dict[str, str]) -> str:
    """Return ``parts`` written as an RRULE."""
    return ";".join(f"{name}={value}" for name, value in parts.items())


def numbers(name: str, value: str) -> list[int]:
    """Return the numbers of a BYxxx list, or raise ``ValueError`` giving their range."""
    low, high, from_end = NUMBER_LISTS[name]
    items = value.split(",")
    found = [int(item) for item in items if _NUMBER.fullmatch(item)]
    if len(found) != len(items) or not all(
        low <= n <= high or (from_end and -high <= n <= -1) for n in found
    ):
        ends = f" (or -{high} to -1, counting from the end)" if from_end else ""
        raise ValueError(f"{name} must list whole numbers from {low} to {high}{ends}.")
    return found


def weekdays(value: str, *, numbered: bool) -> set[int]:
    """Return the weekdays (0 is Monday) of a BYDAY value, without their numbers."""
    days = set()
    for item in value.split(","):
        match = _WEEKDAY.fullmatch(item)
        if match is None or (match[1] and not 1 <= abs(int(match[1])) <= 53):
            raise ValueError(
                f"BYDAY must list weekdays ({', '.join(WEEKDAYS)}), "
                "with FREQ=MONTHLY or YEARLY optionally numbered like 1MO or -1FR."
            )
        if match[1] and not numbered:
            raise ValueError("Numbered weekdays like 1MO need FREQ=MONTHLY or YEARLY.")
        days.add(WEEKDAYS.index(match[2]))
    return days


def _parts(rule: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in filter(None, rule.split(";")):
        name, equals, value = item.partition("=")
        if not equals or not value:
            raise ValueError(f"'{item}' is not a NAME=VALUE part; write the rule like {EXAMPLE}.")
        if name not in PARTS:
            raise ValueError(f"{name} is not a recurrence rule part (see RFC 5545 RRULE).")
        if name in parts:
            raise ValueError(f"{name} is given twice.")
        parts[name] = value
    return parts


def _frequency(parts: dict[str, str]) -> str:
    freq = parts.get("FREQ", "")
    if freq in ("SECONDLY", "MINUTELY", "HOURLY"):
        raise ValueError(
            "A todo can repeat at most daily: use FREQ=DAILY, WEEKLY, MONTHLY or YEARLY "
            "(a reminder can nudge you more often)."
        )
    if freq not in FREQUENCIES:
        raise ValueError("The rule needs FREQ=DAILY, WEEKLY, MONTHLY or YEARLY.")
    return freq


def _check(name: str, value: str, freq: str) -> None:
    if name in NUMBER_LISTS:
        if len(numbers(name, value)) > 1 and name in TIME_PARTS:
            raise ValueError(
                "A todo can repeat at most daily: give BYHOUR, BYMINUTE and BYSECOND "
                "one value each (the time of day)."
            )
    elif name == "BYDAY":
        weekdays(value, numbered=freq in ("MONTHLY", "YEARLY"))
    elif name == "INTERVAL" and not _whole(value, 1, MAX_INTERVAL[freq]):
        raise ValueError(
            f"INTERVAL must be a whole number from 1 to {MAX_INTERVAL[freq]} with FREQ={freq}: "
            f"a todo repeats at least once every {HORIZON_YEARS} years."
        )
    elif name == "COUNT" and not _whole(value, 1, None):
        raise ValueError("COUNT must be a whole number of at least 1.")
    elif name == "UNTIL" and not _UNTIL.fullmatch(value):
        raise ValueError("UNTIL must be a UTC date and time like 20301231T235959Z.")
    elif name == "WKST" and value not in WEEKDAYS:
        raise ValueError(f"WKST must be one of {', '.join(WEEKDAYS)}.")


def _one_of(names: tuple[str, ...]) -> str:
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))


def _whole(value: str, low: int, high: int | None) -> bool:
    return bool(_WHOLE.fullmatch(value)) and low <= int(value) <= (high or int(value))
