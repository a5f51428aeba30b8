"""What reminders do when todos change: a deleted todo needs no reminding.

A completed todo's reminders are cancelled by the todo-completion saga
(``apps.sagas.completion``), which restores them if the completion is undone.
"""

from __future__ import annotations

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from apps.reminders import services
from apps.todos.events import TodoDeleted


@handles(TodoDeleted, name="reminders.cancel-with-todo")
def cancel_with_todo(recorded: RecordedEvent) -> None:
    """Cancel the todo's pending reminders."""
    context = CommandContext(actor_id="system").caused_by(recorded)
    services.cancel_pending_of_todo(
        todo_id=recorded.stream_id, reason="todo deleted", context=context
    )
