"""The events of a notification's life."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from apps.eventstore.registry import DomainEvent, event


@event("notification.requested")
class NotificationRequested(DomainEvent):
    owner_id: int
    channel: str
    source_event_id: uuid.UUID
    source_type: str
    occurred_at: datetime
    body: dict[str, Any]


@event("notification.sent")
class NotificationSent(DomainEvent):
    sent_at: datetime
    target: str


@event("notification.failed")
class NotificationFailed(DomainEvent):
    kind: str
    error: str


@event("notification.retried")
class NotificationRetried(DomainEvent):
    """A failed notification is requested again: its dead letter was retried."""
