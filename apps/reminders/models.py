"""The reminders' state: one row per reminder, written inline, rebuildable from the log.

Why inline. Each reminder service writes the row in the transaction that appends the
reminder's events (``services._keep_state``), not in a handler that runs later as the
todos' projection does. The beat sweep claims due reminders from this table
(``reminder_due_idx``), the pending limit per todo is counted in it, and the API answers
from it right after a command: if it lagged the log, a snoozed reminder could fire at its
old time, or a cancelled one fire at all. Committing with the event, it can't disagree.

How it is rebuilt. The log is still the truth: ``manage.py rebuild_state reminders``
(``apps.reminders.rebuild.rebuild_states``) folds every reminder stream through the
``Reminder`` aggregate and rewrites the rows to match, in one transaction that holds the
append lock (the protocol is in that function's docstring). Every column but two comes from
the log (``rebuild.LOG_COLUMNS``): ``triggered_at`` from the last ``reminder.triggered``,
``cancel_reason`` from ``reminder.cancelled`` (cleared by ``reminder.restored``), ``version``
is the stream's.

What the log can't give. ``created_at`` and ``updated_at`` are the row's own bookkeeping
(when it was inserted and last written). A rebuild keeps them on rows it finds; a row it
has to insert gets the time of its stream's first and last events (the inline insert
happened a moment after, in the same transaction); a row it repairs gets ``updated_at``
now, since the rebuild wrote it.
"""

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
