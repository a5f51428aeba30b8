"""Reads of todos: always from the read models (the event history excepted)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db.models import BooleanField, Case, QuerySet, Value, When
from django.utils import timezone

from apps.eventstore import projections, store
from apps.eventstore.registry import RecordedEvent
from apps.todos.events import TodoCreated
from apps.todos.fields import PRIORITIES
from apps.todos.models import TodoStats, TodoView
from apps.todos.rules import TodoStatus, overdue_q
from apps.todos.services import TodoNotFound


def todos_of(owner_id: int, now: datetime | None = None) -> QuerySet[TodoView]:
    """Return the owner's todos from the live generation, with ``is_overdue`` computed as
    of ``now`` (default: the current time)."""
    return TodoView.objects.filter(
        owner_id=owner_id, generation=projections.live_generation("todos")
    ).annotate(
        is_overdue=Case(
            When(overdue_q(timezone.now() if now is None else now), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        )
    )


def todo_of(owner_id: int, todo_id: uuid.UUID) -> TodoView:
    """Return one of the owner's todos, or raise ``TodoNotFound``."""
    view = todos_of(owner_id).filter(todo_id=todo_id).first()
    if view is None:
        raise TodoNotFound(todo_id)
    return view


def history_of(owner_id: int, todo_id: uuid.UUID, *, related: bool = False) -> list[RecordedEvent]:
    """Return the todo's events, oldest first, if the owner created it; with ``related``,
    also what its commands set off elsewhere (its completion saga, reminders cancelled,
    notifications), every event sharing a correlation id with the todo's, in log order."""
    events = store.read_stream(todo_id)
    if (
        not events
        or not isinstance(events[0].payload, TodoCreated)
        or events[0].payload.owner_id != owner_id
    ):
        raise TodoNotFound(todo_id)
    if related:
        return store.read_correlated(event.metadata.correlation_id for event in events)
    return events


def stats_of(owner_id: int) -> dict[str, Any]:
    """Return the owner's counts, overdue count, completion rate and counts by priority."""
    generation = projections.current_generation("todos")
    row = TodoStats.objects.filter(owner_id=owner_id, generation=generation).first() or TodoStats()
    overdue = TodoView.objects.filter(
        overdue_q(timezone.now()), owner_id=owner_id, generation=generation
    ).count()
    return {
        "total": row.total,
        **{status: getattr(row, status) for status in TodoStatus.values},
        "overdue": overdue,
        "completion_rate": round(row.completed / row.total, 4) if row.total else 0.0,
        "by_priority": {name: getattr(row, name) for name in PRIORITIES},
    }
