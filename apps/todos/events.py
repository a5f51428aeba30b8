"""The events of a todo's life. Names and versions are stored: never rename them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from apps.eventstore.registry import DomainEvent, event, upcaster


@event("todo.created")
class TodoCreated(DomainEvent):
    owner_id: int
    title: str
    description: str = ""
    priority: str = "medium"
    due_at: datetime | None = None
    tags: list[str] = []
    recurrence: str | None = None
    # The first todo of a recurring series; its later occurrences carry its id.
    series_id: uuid.UUID | None = None
    # Which todo of its series this is (1 for the first): a COUNT rule ends the series by it.
    occurrence: int = 1


@event("todo.updated")
class TodoUpdated(DomainEvent):
    """Only the fields that changed, with their new values (``due_at`` may become null)."""

    changes: dict[str, Any]


@event("todo.completed")
class TodoCompleted(DomainEvent):
    completed_at: datetime


@event("todo.reopened", version=2)
class TodoReopened(DomainEvent):
    # Why the system reopened it (a completion it could not finish); None: its owner did.
    reason: str | None = None


@upcaster("todo.reopened", from_version=1)
def _reopened_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # v1 had no reason: its owner reopened it. A new version, not just a new optional field:
    # a worker of the v1 code refuses the unknown field, but defers a newer version.
    return {**data, "reason": None}


@event("todo.deleted")
class TodoDeleted(DomainEvent):
    deleted_at: datetime


@event("todo.restored")
class TodoRestored(DomainEvent):
    pass
