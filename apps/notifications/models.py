"""A user's channels, and the state of each notification (kept with its events)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class NotificationSettings(models.Model):
    """Where a user is notified besides their account email."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    webhook_url = models.URLField(max_length=2000, blank=True)
    # HMAC-SHA256 key of X-Backstop-Signature; shown to the user once, when set or rotated.
    webhook_secret = models.CharField(max_length=100, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "notification settings"

    def __str__(self) -> str:
        return f"channels of user {self.user_id}"


class NotificationState(models.Model):
    class Status(models.TextChoices):
        REQUESTED = "requested"
        RETRYING = "retrying"
        SENT = "sent"
        FAILED = "failed"

    notification_id = models.UUIDField(primary_key=True)
    owner_id = models.IntegerField()
    channel = models.CharField(max_length=20)
    target = models.CharField(max_length=2000, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    source_type = models.CharField(max_length=150)
    source_event_id = models.UUIDField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Consumer: GET /api/v1/notifications/ (the owner's, newest first).
        indexes = [models.Index(fields=["owner_id", "-created_at"], name="notification_owner_idx")]

    def __str__(self) -> str:
        return f"{self.channel} notification {self.notification_id} ({self.status})"
