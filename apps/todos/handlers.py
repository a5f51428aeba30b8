"""What the todos app does when todo events happen: keep its read models current."""

from __future__ import annotations

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.subscriptions import handles
from apps.todos import services
from apps.todos.events import TodoCompleted
from apps.todos.projections import TODO_EVENTS, todos_projection


@handles(*TODO_EVENTS, name="todos.projection", ordered=True)
def project_todo(recorded: RecordedEvent) -> None:
    """Apply the event to the live generation of TodoView and TodoStats."""
    todos_projection.apply_live(recorded)


@handles(TodoCompleted, name="todos.recurrence")
def create_next_occurrence(recorded: RecordedEvent) -> None:
    """Completing a recurring todo creates the next one of its series (exactly once)."""
    services.create_next_occurrence(completed=recorded)
