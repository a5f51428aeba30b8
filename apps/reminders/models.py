"""The reminders' state, kept in the same transaction as their events (the sweep needs it
exact, not eventually consistent)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class ReminderState(models.Model):
    reminder_id = models.UUIDField(primary_key=True)
    todo_id = models.UUIDField(db_index=True)
    owner_id = models.IntegerField(db_index=True)
    remind_at = models.DateTimeField()
    channels = models.JSONField(default=list)
    status = models.CharField(max_length=10)
    version = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    triggered_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [
            # Consumer: services.fire_due_reminders claims due rows through this index only.
            models.Index(
                fields=["remind_at"], name="reminder_due_idx", condition=Q(status="pending")
            ),
        ]

    def __str__(self) -> str:
        return f"reminder {self.reminder_id} at {self.remind_at} ({self.status})"
