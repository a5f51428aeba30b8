"""Rebuilding the notifications' state table from the event log, which is the truth.

``NotificationState`` is written inline by the services (see ``apps.notifications.models``,
which also lists the columns the log can't give and how a rebuild treats them); this module
rewrites its rows to what the notification streams say.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from apps.eventstore.folding import folded_under_append_lock
from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent
from apps.notifications import events, failures, targets
from apps.notifications.aggregates import FAILED, SENT, Notification
from apps.notifications.models import NotificationState
from apps.notifications.services import shown_targets

EVENT_TYPES = frozenset(
    cls.event_type
    for cls in (
        events.NotificationRequested,
        events.NotificationSent,
        events.NotificationFailed,
        events.NotificationRetried,
    )
)
#: The columns the log decides (``target`` too, once a notification is sent).
LOG_COLUMNS = ("owner_id", "channel", "source_type", "source_event_id", "status", "sent_at")
#: Events that end an attempt: a sent notification took one, a failed one at least one.
_ENDS_ATTEMPTS = (events.NotificationSent, events.NotificationFailed)


@dataclass
class Folded:
    """One notification stream folded: the aggregate, its attempts known to the log (a
    lower bound), and when its first and last events occurred."""

    notification: Notification
    attempts: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class RebuildReport:
    streams: int
    inserted: int
    updated: int
    deleted: int


def log_values(notification: Notification, status_now: str | None) -> dict[str, object]:
    """Return the notification's row as the log says it is, given the row's status now.

    A row ``retrying`` (an attempt failed, another is due) stays so until the log says
    sent: the log has no event for a failed attempt, only for the notification's end.
    """
    status = notification.status
    if status_now == NotificationState.Status.RETRYING and status != SENT:
        status = status_now
    values: dict[str, object] = {
        "owner_id": notification.owner_id,
        "channel": notification.channel,
        "source_type": notification.source_type,
        "source_event_id": notification.source_event_id,
        "status": status,
        "sent_at": notification.sent_at,
    }
    if notification.status == SENT:
        values["target"] = targets.as_recorded(notification.channel, notification.target)
    return values


def count_events() -> int:
    """Return how many events a rebuild folds (for a progress bar)."""
    return Event.objects.filter(type__in=EVENT_TYPES).count()


def rebuild_states(
    *, batch: int = 1000, progress: Callable[[int], None] | None = None
) -> RebuildReport:
    """Rewrite every ``NotificationState`` row to what the log says; return what changed.

    1. Fold the notification streams from the whole log, batch by batch, holding no
       lock: deliveries go on meanwhile.
    2. In one transaction, take the append lock: no event of any stream commits until
       this one does. The services write a row only after appending in the same
       transaction, so none of them holds a row lock while it waits for this lock.
    3. Fold the events that committed since step 1 (the catch-up).
    4. Lock every row (``FOR UPDATE``). The one writer that doesn't append, the attempt
       counter (``services.record_attempt_failed``), is a single update that waits for
       nothing we hold: we wait for it, then it waits for us, and its count is not lost.
    5. Insert the missing rows, update the differing ones (the log's columns only),
       delete rows of no notification stream; commit, which releases both locks.
    """
    folded: dict[uuid.UUID, Folded] = {}
    with folded_under_append_lock(
        lambda recorded: _apply(folded, recorded),
        types=EVENT_TYPES,
        batch=batch,
        progress=progress,
    ):
        return _rewrite(folded)


def _apply(folded: dict[uuid.UUID, Folded], recorded: RecordedEvent) -> None:
    if recorded.stream_type != Notification.stream_type:
        return
    at = recorded.metadata.occurred_at
    new = Folded(Notification(recorded.stream_id), 0, at, at)
    stream = folded.setdefault(recorded.stream_id, new)
    stream.notification.apply(recorded.payload)
    stream.attempts += isinstance(recorded.payload, _ENDS_ATTEMPTS)
    stream.last_at = at


def _rewrite(folded: dict[uuid.UUID, Folded]) -> RebuildReport:
    rows = {row.notification_id: row for row in NotificationState.objects.select_for_update()}
    stale = [key for key in rows if key not in folded]
    deleted, _ = NotificationState.objects.filter(notification_id__in=stale).delete()
    changed = [row for key, row in rows.items() if key in folded and _repair(row, folded[key])]
    now = timezone.now()
    for row in changed:
        row.updated_at = now  # the row's own column: when it was last written
    NotificationState.objects.bulk_update(changed, [*LOG_COLUMNS, "target", "updated_at"])
    missing = [stream for key, stream in folded.items() if key not in rows]
    _insert(missing)
    return RebuildReport(len(folded), len(missing), len(changed), deleted)


def _repair(row: NotificationState, stream: Folded) -> bool:
    """Set the row's log columns to the log's; return whether any differed."""
    wanted = log_values(stream.notification, row.status)
    differs = any(getattr(row, column) != value for column, value in wanted.items())
    for column, value in wanted.items():
        setattr(row, column, value)
    return differs


def _insert(streams: list[Folded]) -> None:
    """Insert a row per stream: the log's columns, and the best the log allows for the rest."""
    shown: dict[int, dict[str, str]] = {}
    rows = []
    for stream in streams:
        notification = stream.notification
        if notification.owner_id not in shown:
            shown[notification.owner_id] = shown_targets(notification.owner_id)
        failed = notification.status == FAILED
        row = NotificationState(
            notification_id=notification.id,
            target=shown[notification.owner_id].get(notification.channel, ""),
            attempts=stream.attempts,
            last_error=failures.fallback(notification.channel) if failed else "",
        )
        for column, value in log_values(notification, None).items():
            setattr(row, column, value)
        rows.append(row)
    NotificationState.objects.bulk_create(rows)  # auto_now(_add) stamp them now: reset below
    for row, stream in zip(rows, streams, strict=True):
        row.created_at, row.updated_at = stream.first_at, stream.last_at
    NotificationState.objects.bulk_update(rows, ["created_at", "updated_at"])
