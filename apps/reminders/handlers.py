"""What reminders do when todos change: a completed or deleted todo needs no reminding."""

from __future__ import annotations

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from apps.reminders import services
from apps.todos.events import TodoCompleted, TodoDeleted


@handles(TodoCompleted, TodoDeleted, name="reminders.cancel-with-todo")
def cancel_with_todo(recorded: RecordedEvent) -> None:
    """Cancel the todo's pending reminders."""
    reason = "todo completed" if isinstance(recorded.payload, TodoCompleted) else "todo deleted"
    context = CommandContext(actor_id="system").caused_by(recorded)
    services.cancel_pending_of_todo(todo_id=recorded.stream_id, reason=reason, context=context)
