"""Helpers of the todos tests (the personas live in tests/support/api.py)."""

from __future__ import annotations

import uuid

from apps.eventstore import projections
from apps.todos.models import TodoView
from tests.support.waiting import wait_until


def projected(todo_id: str | uuid.UUID, version: int, timeout: float = 20) -> TodoView:
    """Wait until the read model has applied ``version`` of the todo, and return its row."""
    generation = projections.current_generation("todos")

    def applied() -> TodoView | None:
        return TodoView.objects.filter(
            generation=generation, todo_id=todo_id, version__gte=version
        ).first()

    return wait_until(
        applied, timeout=timeout, message=f"todo {todo_id} v{version} in the read model"
    )
