"""A user's channels, and the state of each notification: written inline, rebuildable.

Why inline. ``NotificationState`` is written by the services in the transaction that
appends the notification's events (requested, sent, failed), not by a handler that runs
later: a user's delivery list (GET /api/v1/notifications/) shows a notification the moment
it is requested and "sent" the moment the delivery commits, never an older story than
the log's.

How it is rebuilt. The log is still the truth: ``manage.py rebuild_state notifications``
(``apps.notifications.rebuild.rebuild_states``) folds every notification stream through
the ``Notification`` aggregate and rewrites the rows to match, in one transaction that
holds the append lock (the protocol is in that function's docstring). From the log come
``owner_id``, ``channel``, ``source_type``, ``source_event_id``, ``status``, ``sent_at``
and, once sent, ``target`` (``rebuild.LOG_COLUMNS``).

What the log can't give, and what a rebuild does with it:

- ``attempts`` and ``last_error`` are written by the delivery handler's error hook
  (``services.record_attempt_failed``) after a failed attempt rolled back: no event
  records an attempt, only the notification's end. A rebuild keeps them on rows it finds.
  A row it has to insert gets the attempts the log proves (one per ``notification.sent``
  or ``notification.failed``: a lower bound; the runtime's delivery attempts hold the
  rest) and, when failed, the generic message of its channel (``failures.fallback``);
  the detail stays in the ``notification.failed`` event, for operators.
- ``status`` ``retrying`` (an attempt failed, another is due) is not in the log either: a
  rebuild keeps it until the log says sent.
- ``target`` before sending is where the notification would go when it was requested
  (the user's address or webhook host then). A rebuild keeps it; an inserted row gets
  where it would go now.
- ``created_at`` and ``updated_at`` are the row's own bookkeeping: kept on rows a rebuild
  finds, the times of the stream's first and last events on rows it inserts (the inline
  insert happened a moment after, in the same transaction), and ``updated_at`` now on
  rows it repairs. The delivery list pages by ``created_at``.
"""

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
    # Where the user is told that they completed a todo ("email", "webhook"); none by default.
    completion_channels = models.JSONField(default=list, blank=True)
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
        indexes = [
            # Consumer: GET /api/v1/notifications/ (the owner's, newest first).
            models.Index(fields=["owner_id", "-created_at"], name="notification_owner_idx"),
            # Consumer: services.request_notifications, which finds a source's notifications
            # before requesting them, so that a redelivered source requests none twice.
            models.Index(fields=["source_event_id"], name="notification_source_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} notification {self.notification_id} ({self.status})"
