"""What a valid todo field is: its limits and the normalisation the API and aggregate share."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apps.api.storable import storable_str
from apps.resilience.taxonomy import InvalidInput
from apps.todos import recurrence

TITLE_MAX = 200
DESCRIPTION_MAX = 10_000
TAGS_MAX = 20
TAG_MAX = 40
PRIORITIES = ("low", "medium", "high", "urgent")
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
EDITABLE = ("title", "description", "priority", "due_at", "tags", "recurrence")


class InvalidTodo(InvalidInput):
    """One or more fields are invalid; ``fields`` maps each to its messages."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields
        super().__init__("; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in fields.items()))


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """Return ``values`` normalised, or raise ``InvalidTodo`` naming every bad field."""
    cleaners = {
        "title": _title,
        "description": _description,
        "priority": _priority,
        "due_at": _due_at,
        "tags": _tags,
        "recurrence": _recurrence,
    }
    cleaned, errors = {}, {}
    for name, value in values.items():
        if name not in cleaners:
            errors[name] = ["Unknown field."]
            continue
        try:
            cleaned[name] = cleaners[name](value)
        except ValueError as exc:
            errors[name] = [str(exc)]
    if errors:
        raise InvalidTodo(errors)
    return cleaned


def _title(value: Any) -> str:
    title = storable_str(value).strip()
    if not title:
        raise ValueError("Must not be blank.")
    if len(title) > TITLE_MAX:
        raise ValueError(f"Must be at most {TITLE_MAX} characters.")
    return title


def _description(value: Any) -> str:
    if len(storable_str(value)) > DESCRIPTION_MAX:
        raise ValueError(f"Must be at most {DESCRIPTION_MAX} characters.")
    return value


def _priority(value: Any) -> str:
    if value not in PRIORITIES:
        raise ValueError(f"Must be one of {', '.join(PRIORITIES)}.")
    return value


def _due_at(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValueError("Must be a date and time.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("Must include a time zone (e.g. 2026-01-31T09:00:00Z).")
    return value


def _recurrence(value: Any) -> str | None:
    return None if value is None else recurrence.normalise(value)


def _tags(value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise ValueError("Must be a list of strings.")
    tags: list[str] = []
    for raw in value:
        tag = storable_str(raw).strip().lower()
        if not tag:
            raise ValueError("Tags must not be blank.")
        if "|" in tag:
            raise ValueError("Tags must not contain '|'.")
        if len(tag) > TAG_MAX:
            raise ValueError(f"Each tag must be at most {TAG_MAX} characters.")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > TAGS_MAX:
        raise ValueError(f"At most {TAGS_MAX} tags.")
    return tags


def from_json(changes: dict[str, Any]) -> dict[str, Any]:
    """Return stored ``todo.updated`` changes with their Python types (``due_at`` a datetime)."""
    values = dict(changes)
    if isinstance(values.get("due_at"), str):
        values["due_at"] = datetime.fromisoformat(values["due_at"])
    return values
