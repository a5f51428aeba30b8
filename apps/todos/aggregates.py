"""The Todo aggregate: it checks every rule before it records an event."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.utils import timezone

from apps.eventstore.aggregates import Aggregate, applies
from apps.resilience.taxonomy import BusinessRuleViolation
from apps.todos import fields, recurrence
from apps.todos.events import (
    TodoCompleted,
    TodoCreated,
    TodoDeleted,
    TodoReopened,
    TodoRestored,
    TodoUpdated,
)
from apps.todos.rules import TodoStatus


class Todo(Aggregate):
    stream_type = "todo"

    def __init__(self, stream_id: uuid.UUID) -> None:
        super().__init__(stream_id)
        self.owner_id = 0
        self.title = ""
        self.description = ""
        self.priority = "medium"
        self.due_at: datetime | None = None
        self.tags: list[str] = []
        self.recurrence: str | None = None
        self.series_id: uuid.UUID | None = None
        self.occurrence = 1
        self.status = TodoStatus.OPEN
        self.status_before_delete = TodoStatus.OPEN
        self.completed_at: datetime | None = None
        self.deleted_at: datetime | None = None

    # -- commands ------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        *,
        owner_id: int,
        todo_id: uuid.UUID | None = None,
        series_id: uuid.UUID | None = None,
        occurrence: int = 1,
        **values: Any,
    ) -> Todo:
        """Return a new todo; ``title`` is required, the other fields optional."""
        if "title" not in values:
            raise fields.InvalidTodo({"title": ["This field is required."]})
        todo = cls(todo_id or uuid.uuid4())
        todo.record(
            TodoCreated(
                owner_id=owner_id,
                series_id=series_id,
                occurrence=occurrence,
                **fields.clean(values),
            )
        )
        return todo

    def next_occurrence(self, completed_at: datetime) -> Todo | None:
        """Return the next todo of this one's series, or None when it doesn't recur (any more).

        Its id is derived from the series and this todo's id (one next todo per todo, whatever
        its due date or completion time), so creating it twice (a redelivered completion, or
        completing again after reopening) is a conflict, not a copy.
        """
        if not self.recurrence or self.status == TodoStatus.DELETED:
            return None
        start = self.due_at or completed_at
        due = recurrence.next_after(self.recurrence, start, occurrence=self.occurrence)
        if due is None:
            return None
        return Todo.create(
            owner_id=self.owner_id,
            todo_id=self.next_occurrence_id(),
            series_id=self.series_id or self.id,
            occurrence=self.occurrence + 1,
            title=self.title,
            description=self.description,
            priority=self.priority,
            due_at=due,
            tags=list(self.tags),
            recurrence=self.recurrence,
        )

    def next_occurrence_id(self) -> uuid.UUID:
        """Return the id the next todo of this one's series has, if it has one (see above)."""
        return uuid.uuid5(self.series_id or self.id, f"next-of:{self.id}")

    def update(self, **values: Any) -> None:
        """Change the given fields; fields that keep their value are not recorded."""
        self._refuse_if(
            self.status == TodoStatus.DELETED, "a deleted todo can't be changed; restore it first"
        )
        cleaned = fields.clean(values)
        changes = {name: value for name, value in cleaned.items() if getattr(self, name) != value}
        if changes:
            self.record(TodoUpdated(changes=_jsonable(changes)))

    def complete(self) -> None:
        self._refuse_if(self.status == TodoStatus.COMPLETED, "the todo is already completed")
        self._refuse_if(self.status == TodoStatus.DELETED, "a deleted todo can't be completed")
        self.record(TodoCompleted(completed_at=timezone.now()))

    def reopen(self, reason: str | None = None) -> None:
        """Reopen a completed todo; ``reason`` says why when the system does it."""
        self._refuse_if(self.status == TodoStatus.OPEN, "the todo is already open")
        self._refuse_if(
            self.status == TodoStatus.DELETED, "a deleted todo can't be reopened; restore it first"
        )
        self.record(TodoReopened(reason=reason))

    def delete(self) -> None:
        self._refuse_if(self.status == TodoStatus.DELETED, "the todo is already deleted")
        self.record(TodoDeleted(deleted_at=timezone.now()))

    def restore(self) -> None:
        self._refuse_if(self.status != TodoStatus.DELETED, "only a deleted todo can be restored")
        self.record(TodoRestored())

    @staticmethod
    def _refuse_if(broken: bool, message: str) -> None:
        if broken:
            raise BusinessRuleViolation(message)

    # -- state ---------------------------------------------------------------------------
    @applies(TodoCreated)
    def _created(self, event: TodoCreated) -> None:
        self.owner_id = event.owner_id
        self.title, self.description, self.priority = event.title, event.description, event.priority
        self.due_at, self.tags = event.due_at, list(event.tags)
        self.recurrence, self.series_id = event.recurrence, event.series_id
        self.occurrence = event.occurrence

    @applies(TodoUpdated)
    def _updated(self, event: TodoUpdated) -> None:
        for name, value in fields.from_json(event.changes).items():
            setattr(self, name, value)

    @applies(TodoCompleted)
    def _completed(self, event: TodoCompleted) -> None:
        self.status, self.completed_at = TodoStatus.COMPLETED, event.completed_at

    @applies(TodoReopened)
    def _reopened(self, event: TodoReopened) -> None:
        self.status, self.completed_at = TodoStatus.OPEN, None

    @applies(TodoDeleted)
    def _deleted(self, event: TodoDeleted) -> None:
        self.status_before_delete, self.status, self.deleted_at = (
            self.status,
            TodoStatus.DELETED,
            event.deleted_at,
        )

    @applies(TodoRestored)
    def _restored(self, event: TodoRestored) -> None:
        self.status, self.deleted_at = self.status_before_delete, None


def _jsonable(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()}
