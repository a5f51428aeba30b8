"""The events of a reminder's life."""

from __future__ import annotations

import uuid
from datetime import datetime

from apps.eventstore.registry import DomainEvent, event


@event("reminder.scheduled")
class ReminderScheduled(DomainEvent):
    todo_id: uuid.UUID
    owner_id: int
    remind_at: datetime
    channels: list[str]


@event("reminder.snoozed")
class ReminderSnoozed(DomainEvent):
    remind_at: datetime
    minutes: int


@event("reminder.cancelled")
class ReminderCancelled(DomainEvent):
    reason: str


@event("reminder.triggered")
class ReminderTriggered(DomainEvent):
    triggered_at: datetime
    remind_at: datetime


@event("reminder.restored")
class ReminderRestored(DomainEvent):
    """A cancelled reminder is pending again, at its time and on its channels (a completed
    todo's saga undoing the cancel it made when it could not finish)."""
