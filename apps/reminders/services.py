"""Reminder commands. Each writes its events and the reminder's state in one transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext, lock_for_transaction
from apps.reminders.aggregates import CANCELLED, PENDING, Reminder
from apps.reminders.models import ReminderState
from apps.reminders.rebuild import row_values
from apps.resilience.taxonomy import BusinessRuleViolation, NotFound
from apps.todos.rules import TodoStatus
from apps.todos.services import load_todo

repository = Repository(Reminder)
MAX_PENDING_PER_TODO = 10


class ReminderNotFound(NotFound):
    def __init__(self, reminder_id: uuid.UUID) -> None:
        super().__init__(f"reminder {reminder_id} not found")


def schedule_reminder(
    *,
    owner_id: int,
    todo_id: uuid.UUID,
    remind_at: datetime,
    channels: list[str],
    context: CommandContext,
) -> ReminderState:
    """Schedule a reminder of the owner's open todo (at most 10 pending per todo)."""
    with transaction.atomic():
        _lock_todo(todo_id)
        todo = load_todo(owner_id=owner_id, todo_id=todo_id)
        if todo.status != TodoStatus.OPEN:
            raise BusinessRuleViolation(f"no reminders on a {todo.status} todo")
        _refuse_over_limit(todo_id)
        reminder = Reminder.schedule(
            todo_id=todo_id,
            owner_id=owner_id,
            remind_at=remind_at,
            channels=channels,
            now=timezone.now(),
        )
        repository.save(reminder, context)
        return _keep_state(reminder)


def snooze_reminder(
    *, owner_id: int, reminder_id: uuid.UUID, minutes: int, context: CommandContext
) -> ReminderState:
    """Move the reminder to ``minutes`` from now (a triggered one becomes pending again)."""
    with transaction.atomic():
        reminder = _load_owned(owner_id, reminder_id)
        if reminder.status != PENDING:
            assert reminder.todo_id is not None  # a stored reminder was scheduled for a todo
            _lock_todo(reminder.todo_id)
            _refuse_over_limit(reminder.todo_id)
        reminder.snooze(minutes, timezone.now())
        repository.save(reminder, context)
        return _keep_state(reminder)


def _refuse_over_limit(todo_id: uuid.UUID) -> None:
    pending = ReminderState.objects.filter(todo_id=todo_id, status=PENDING).count()
    if pending >= MAX_PENDING_PER_TODO:
        raise BusinessRuleViolation(f"a todo has at most {MAX_PENDING_PER_TODO} pending reminders")


def cancel_reminder(
    *,
    owner_id: int,
    reminder_id: uuid.UUID,
    context: CommandContext,
    reason: str = "cancelled by its owner",
) -> ReminderState:
    with transaction.atomic():
        reminder = _load_owned(owner_id, reminder_id)
        reminder.cancel(reason)
        repository.save(reminder, context)
        return _keep_state(reminder)


def cancel_pending_of_todo(
    *, todo_id: uuid.UUID, reason: str, context: CommandContext
) -> list[uuid.UUID]:
    """Cancel every pending reminder of a todo (it was completed or deleted); return their ids.

    A second run finds none pending and returns ``[]``: keep the first run's ids to restore.
    """
    with transaction.atomic():
        _lock_todo(todo_id)
        ids = list(
            ReminderState.objects.select_for_update()
            .filter(todo_id=todo_id, status=PENDING)
            .order_by("reminder_id")
            .values_list("reminder_id", flat=True)
        )
        reminders = [repository.load(reminder_id) for reminder_id in ids]
        for reminder in reminders:
            reminder.cancel(reason)
        repository.save_many(reminders, context)
        for reminder in reminders:
            _keep_state(reminder)
    return ids


def restore_reminders(*, reminder_ids: list[uuid.UUID], context: CommandContext) -> list[uuid.UUID]:
    """Make the cancelled ones of these reminders pending again, as they were before their
    cancel (same time, same channels); return the ids restored.

    Any other (restored already, pending, triggered, unknown) is skipped, so a second run
    restores nothing. The pending limit is not checked: this undoes a cancel, it adds nothing.
    """
    with transaction.atomic():
        rows = ReminderState.objects.filter(reminder_id__in=reminder_ids)
        for todo_id in sorted(set(rows.values_list("todo_id", flat=True))):
            _lock_todo(todo_id)  # in one order: two restores never wait for each other
        ids = list(
            rows.select_for_update()
            .filter(status=CANCELLED)
            .order_by("reminder_id")
            .values_list("reminder_id", flat=True)
        )
        reminders = [repository.load(reminder_id) for reminder_id in ids]
        for reminder in reminders:
            reminder.restore()
        repository.save_many(reminders, context)
        for reminder in reminders:
            _keep_state(reminder)
    return ids


def fire_due_reminders(*, batch: int | None = None) -> int:
    """Trigger every pending reminder that is due; return how many fired.

    1. In one transaction, claim up to ``batch`` due reminders with ``FOR UPDATE SKIP
       LOCKED``: a second beat or worker running this at the same moment skips them.
    2. Record ``reminder.triggered`` for each (one append) and mark them triggered.
    3. Commit, and go on with the next batch until none is due. A reminder that fell due
       while no worker ran fires on the first run after, late but once.
    """
    size = batch or settings.REMINDER_SWEEP_BATCH
    fired = 0
    while True:
        with transaction.atomic():
            due = list(
                ReminderState.objects.select_for_update(skip_locked=True)
                .filter(status=PENDING, remind_at__lte=timezone.now())
                .order_by("remind_at")
                .values_list("reminder_id", flat=True)[:size]
            )
            reminders = [repository.load(reminder_id) for reminder_id in due]
            now = timezone.now()
            for reminder in reminders:
                reminder.trigger(now)
            repository.save_many(reminders, CommandContext(actor_id="system"))
            for reminder in reminders:
                _keep_state(reminder)
        fired += len(due)
        if len(due) < size:
            return fired


def _load_owned(owner_id: int, reminder_id: uuid.UUID) -> Reminder:
    state = (
        ReminderState.objects.select_for_update()
        .filter(reminder_id=reminder_id, owner_id=owner_id)
        .first()
    )
    if state is None:
        raise ReminderNotFound(reminder_id)
    return repository.load(reminder_id)


def _lock_todo(todo_id: uuid.UUID) -> None:
    """Serialise reminder commands of one todo, so the pending limit holds under concurrency."""
    lock_for_transaction(f"reminders:{todo_id}")


def _keep_state(reminder: Reminder) -> ReminderState:
    """Write the reminder's row as the log now says it is (in the caller's transaction, after
    its events: ``rebuild.rebuild_states`` relies on that order)."""
    # Only a scheduled reminder is kept, and scheduling sets both.
    assert reminder.todo_id is not None
    assert reminder.remind_at is not None
    state, _ = ReminderState.objects.update_or_create(
        reminder_id=reminder.id, defaults=row_values(reminder)
    )
    return state
