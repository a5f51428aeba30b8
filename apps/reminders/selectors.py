"""Reads of reminders."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from apps.reminders.models import ReminderState
from apps.todos.services import load_todo


def reminders_of_todo(owner_id: int, todo_id: uuid.UUID) -> QuerySet[ReminderState]:
    """Return the reminders of the owner's todo, soonest first (``TodoNotFound`` otherwise)."""
    load_todo(owner_id=owner_id, todo_id=todo_id)
    return ReminderState.objects.filter(owner_id=owner_id, todo_id=todo_id).order_by("remind_at")
