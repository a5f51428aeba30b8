"""The Reminder aggregate: rules first, then an event."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from apps.eventstore.aggregates import Aggregate, applies
from apps.reminders.events import (
    ReminderCancelled,
    ReminderRestored,
    ReminderScheduled,
    ReminderSnoozed,
    ReminderTriggered,
)
from apps.resilience.taxonomy import BusinessRuleViolation, InvalidInput

CHANNELS = ("email", "webhook")
SNOOZE_MINUTES = (1, 10_080)
PENDING, TRIGGERED, CANCELLED = "pending", "triggered", "cancelled"


class Reminder(Aggregate):
    stream_type = "reminder"

    def __init__(self, stream_id: uuid.UUID) -> None:
        super().__init__(stream_id)
        self.todo_id: uuid.UUID | None = None
        self.owner_id = 0
        self.remind_at: datetime | None = None
        self.channels: list[str] = []
        self.status = PENDING
        self.triggered_at: datetime | None = None  # when it last fired (kept through snoozes)
        self.cancel_reason = ""

    @classmethod
    def schedule(
        cls,
        *,
        todo_id: uuid.UUID,
        owner_id: int,
        remind_at: datetime,
        channels: list[str],
        now: datetime,
    ) -> Reminder:
        if remind_at.tzinfo is None:
            raise InvalidInput("remind_at must include a time zone")
        if remind_at <= now:
            raise BusinessRuleViolation("remind_at must be in the future")
        unknown = sorted(set(channels) - set(CHANNELS))
        if not channels or unknown:
            raise InvalidInput(f"channels must be some of {', '.join(CHANNELS)}")
        reminder = cls(uuid.uuid4())
        reminder.record(
            ReminderScheduled(
                todo_id=todo_id,
                owner_id=owner_id,
                remind_at=remind_at,
                channels=list(dict.fromkeys(channels)),
            )
        )
        return reminder

    def snooze(self, minutes: int, now: datetime) -> None:
        low, high = SNOOZE_MINUTES
        if not low <= minutes <= high:
            raise InvalidInput(f"minutes must be from {low} to {high}")
        if self.status == CANCELLED:
            raise BusinessRuleViolation("a cancelled reminder can't be snoozed")
        # Snoozing never brings a reminder forward: it moves from the later of now and
        # its own time (a future reminder is put off further; a fired one, from now).
        base = max(now, self.remind_at) if self.remind_at is not None else now
        self.record(ReminderSnoozed(remind_at=base + timedelta(minutes=minutes), minutes=minutes))

    def cancel(self, reason: str) -> None:
        if self.status != PENDING:
            raise BusinessRuleViolation(
                f"only a pending reminder can be cancelled; this one is {self.status}"
            )
        self.record(ReminderCancelled(reason=reason))

    def restore(self) -> None:
        """Make a cancelled reminder pending again, as it was before the cancel."""
        if self.status != CANCELLED:
            raise BusinessRuleViolation(
                f"only a cancelled reminder can be restored; this one is {self.status}"
            )
        self.record(ReminderRestored())

    def trigger(self, now: datetime) -> None:
        if self.status != PENDING:
            raise BusinessRuleViolation(f"only a pending reminder fires; this one is {self.status}")
        assert self.remind_at is not None
        self.record(ReminderTriggered(triggered_at=now, remind_at=self.remind_at))

    @applies(ReminderScheduled)
    def _scheduled(self, event: ReminderScheduled) -> None:
        self.todo_id, self.owner_id = event.todo_id, event.owner_id
        self.remind_at, self.channels = event.remind_at, list(event.channels)

    @applies(ReminderSnoozed)
    def _snoozed(self, event: ReminderSnoozed) -> None:
        self.remind_at, self.status = event.remind_at, PENDING

    @applies(ReminderCancelled)
    def _cancelled(self, event: ReminderCancelled) -> None:
        self.status, self.cancel_reason = CANCELLED, event.reason

    @applies(ReminderRestored)
    def _restored(self, event: ReminderRestored) -> None:
        # Cancelling changed nothing else: remind_at, channels and triggered_at are as before.
        self.status, self.cancel_reason = PENDING, ""

    @applies(ReminderTriggered)
    def _triggered(self, event: ReminderTriggered) -> None:
        self.status, self.triggered_at = TRIGGERED, event.triggered_at
