"""The Notification aggregate: requested once per (source event, channel), then sent once.

A failed notification can be retried (its dead letter replayed): it is requested again, and
then sent or failed again. A sent one is final, so a notification is never sent twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from apps.eventstore.aggregates import Aggregate, applies
from apps.notifications.events import (
    NotificationFailed,
    NotificationRequested,
    NotificationRetried,
    NotificationSent,
)

REQUESTED, SENT, FAILED = "requested", "sent", "failed"
_IDS = uuid.UUID("0c6f7cf2-6a0e-4a53-bb61-3b9f0d6c8e21")


def notification_id(source_event_id: uuid.UUID, channel: str) -> uuid.UUID:
    """Return the id of the notification of ``source_event_id`` on ``channel``: stable, so the
    same notification is never requested twice and receivers can drop repeats by it."""
    return uuid.uuid5(_IDS, f"{source_event_id}:{channel}")


class Notification(Aggregate):
    stream_type = "notification"

    def __init__(self, stream_id: uuid.UUID) -> None:
        super().__init__(stream_id)
        self.owner_id = 0
        self.channel = ""
        self.status = REQUESTED
        self.body: dict[str, Any] = {}
        self.source_type = ""
        self.source_event_id: uuid.UUID | None = None
        self.occurred_at: datetime | None = None
        self.sent_at: datetime | None = None
        self.target = ""  # where it was sent, as recorded (see ``sent``)

    @classmethod
    def request(
        cls,
        *,
        owner_id: int,
        channel: str,
        source_event_id: uuid.UUID,
        source_type: str,
        occurred_at: datetime,
        body: dict[str, Any],
    ) -> Notification:
        notification = cls(notification_id(source_event_id, channel))
        notification.record(
            NotificationRequested(
                owner_id=owner_id,
                channel=channel,
                source_event_id=source_event_id,
                source_type=source_type,
                occurred_at=occurred_at,
                body=body,
            )
        )
        return notification

    def sent(self, *, at: datetime, target: str) -> None:
        """Record it sent to ``target``: where it went as its owner sees it (``targets.shown``);
        events recorded before that hold the full address or URL, in the same field."""
        if self.status == REQUESTED:
            self.record(NotificationSent(sent_at=at, target=target))

    def failed(self, *, kind: str, error: str) -> None:
        if self.status == REQUESTED:
            self.record(NotificationFailed(kind=kind, error=error[:2000]))

    def retry(self) -> None:
        """Request a failed notification again, to be sent or failed once more; a requested
        or sent one is left as it is (sent is final: never sent twice)."""
        if self.status == FAILED:
            self.record(NotificationRetried())

    @applies(NotificationRequested)
    def _requested(self, event: NotificationRequested) -> None:
        self.owner_id, self.channel, self.body = event.owner_id, event.channel, dict(event.body)
        self.source_type, self.source_event_id = event.source_type, event.source_event_id
        self.occurred_at = event.occurred_at

    @applies(NotificationSent)
    def _sent(self, event: NotificationSent) -> None:
        self.status, self.sent_at, self.target = SENT, event.sent_at, event.target

    @applies(NotificationFailed)
    def _failed(self, event: NotificationFailed) -> None:
        self.status = FAILED

    @applies(NotificationRetried)
    def _retried(self, event: NotificationRetried) -> None:
        self.status = REQUESTED
