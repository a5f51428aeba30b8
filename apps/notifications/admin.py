from __future__ import annotations

from django.contrib import admin

from apps.eventstore.admin import ReadOnlyAdmin
from apps.notifications.models import NotificationState


@admin.register(NotificationState)
class NotificationStateAdmin(ReadOnlyAdmin):
    list_display = [
        "notification_id",
        "owner_id",
        "channel",
        "status",
        "attempts",
        "created_at",
        "sent_at",
    ]
    list_filter = ["status", "channel"]
    search_fields = ["=notification_id", "=source_event_id"]
