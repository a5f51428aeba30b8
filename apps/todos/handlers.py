"""What the todos app does when todo events happen: keep its read models current.

What completing a todo sets off (its reminders, its next occurrence, a notice) is the
todo-completion saga's (``apps.sagas.completion``), undone in reverse if it can't all be done.
"""

from __future__ import annotations

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.subscriptions import handles
from apps.todos.projections import TODO_EVENTS, todos_projection


@handles(*TODO_EVENTS, name="todos.projection", projection="todos")
def project_todo(recorded: RecordedEvent) -> None:
    """Apply one event a batch of the todos projection's follower handed on (or a replayed
    dead letter) to the live generation of TodoView and TodoStats."""
    todos_projection.apply_live(recorded)
