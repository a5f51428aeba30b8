"""Reads of notifications and of a user's channels."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.notifications.models import NotificationSettings, NotificationState


def notifications_of(owner_id: int) -> QuerySet[NotificationState]:
    """Return the owner's notifications, unordered (the API's paging orders them)."""
    return NotificationState.objects.filter(owner_id=owner_id)


def channels_of(user_id: int) -> NotificationSettings | None:
    """Return the user's channel settings, or None while they have set none."""
    return NotificationSettings.objects.filter(user_id=user_id).first()
