"""What PostgreSQL accepts from a request: checks for values that reach a query unvalidated.

A serializer field (``TextField``) and the todo aggregate check what they store with
``storable_str``; the others check what a filter or a cursor only compares. PostgreSQL
refuses such a value with an error (a 500 if it got that far).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

#: PostgreSQL refuses a time-zone displacement of 16 hours or more ("out of range"), and
#: one with a fraction of a second; Python takes up to 24 hours, to the microsecond.
OFFSET_LIMIT = timedelta(hours=16)
OFFSET_MESSAGE = "The time zone offset must be from -15:59 to +15:59, in whole seconds."


def storable_offset(value: datetime) -> bool:
    """Return whether ``value``'s UTC offset (naive: none) is one PostgreSQL accepts."""
    offset = value.utcoffset()
    if offset is None:
        return True
    return abs(offset) < OFFSET_LIMIT and not abs(offset).microseconds


def storable_str(value: Any) -> str:
    """Return ``value`` if it is a string PostgreSQL can store; else raise ``ValueError``
    saying why (not a string, a NUL character, a lone surrogate)."""
    if not isinstance(value, str):
        raise ValueError("Must be a string.")
    if "\x00" in value:
        raise ValueError("Must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("Contains characters that can't be stored (lone surrogates).") from None
    return value


def storable_text(value: str) -> bool:
    """Return whether PostgreSQL can take ``value``: no NUL and no lone surrogate."""
    try:
        storable_str(value)
    except ValueError:
        return False
    return True
