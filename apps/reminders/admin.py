from __future__ import annotations

from django.contrib import admin

from apps.eventstore.admin import ReadOnlyAdmin
from apps.reminders.models import ReminderState


@admin.register(ReminderState)
class ReminderStateAdmin(ReadOnlyAdmin):
    list_display = ["reminder_id", "todo_id", "owner_id", "remind_at", "status", "triggered_at"]
    list_filter = ["status"]
    search_fields = ["=reminder_id", "=todo_id"]
