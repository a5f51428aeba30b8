"""The todo-completion saga: what completing a todo sets off, undone if it can't all be done.

Started by ``todo.completed``:

1. ``complete``: done by the trigger; undone by reopening the todo, with the reason in
   its history.
2. ``cancel-reminders``: cancel the todo's pending reminders; undone by restoring exactly
   the reminders it cancelled.
3. ``next-occurrence``: if the todo recurs, create its next occurrence (exactly once: its
   id is fixed by the series); undone by deleting it.
4. ``notify``: tell the owner on the channels they chose for completions. A notification
   can't be unsent, so this step has no compensation and may fail: its failure is
   recorded and the saga still completes.

If the next occurrence can't be created (its step fails for good), the saga restores the
reminders and reopens the todo. A series whose rule gives no further date simply ends: the
step completes with no occurrence, and so does the saga.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import load_event
from apps.eventstore.subscriptions import handles
from apps.notifications import services as notifications
from apps.reminders import services as reminders
from apps.sagas import orchestrator
from apps.sagas.definitions import SagaDefinition, SagaRun, Step
from apps.todos import services as todos
from apps.todos.events import TodoCompleted

NAME = "todo-completion"


def _reopen(run: SagaRun) -> None:
    assert run.subject_id is not None
    reason = str(run.context.get("compensation_reason") or "a later step failed")
    todos.reopen_after_failure(
        todo_id=run.subject_id, reason=f"reopened: {reason}", context=run.command
    )


def _cancel_reminders(run: SagaRun) -> Mapping[str, Any]:
    assert run.subject_id is not None
    cancelled = reminders.cancel_pending_of_todo(
        todo_id=run.subject_id, reason="todo completed", context=run.command
    )
    return {"cancelled_reminders": [str(reminder_id) for reminder_id in cancelled]}


def _restore_reminders(run: SagaRun) -> None:
    ids = [uuid.UUID(value) for value in run.context.get("cancelled_reminders", [])]
    if ids:
        reminders.restore_reminders(reminder_ids=ids, context=run.command)


def _next_occurrence(run: SagaRun) -> Mapping[str, Any]:
    created = todos.create_next_occurrence(completed=_trigger(run))
    return {"next_occurrence": str(created.id) if created is not None else None}


def _delete_occurrence(run: SagaRun) -> None:
    created = run.context.get("next_occurrence")
    if created:
        todos.delete_occurrence(todo_id=uuid.UUID(created), context=run.command)


def _notify(run: SagaRun) -> Mapping[str, Any]:
    requested = notifications.request_for_completion(completed=_trigger(run), context=run.command)
    return {"notifications": [str(notification_id) for notification_id in requested]}


def _trigger(run: SagaRun) -> RecordedEvent:
    return load_event(run.trigger_event_id)


TODO_COMPLETION = orchestrator.register(
    SagaDefinition(
        name=NAME,
        steps=(
            Step("complete", action=None, compensation=_reopen),
            Step("cancel-reminders", action=_cancel_reminders, compensation=_restore_reminders),
            Step("next-occurrence", action=_next_occurrence, compensation=_delete_occurrence),
            Step("notify", action=_notify, required=False),
        ),
    )
)


@handles(TodoCompleted, name="sagas.todo-completion.start")
def start_completion_saga(recorded: RecordedEvent) -> None:
    """Completing a todo starts its completion saga (once per completion)."""
    orchestrator.start(NAME, trigger=recorded, subject_id=recorded.stream_id)
