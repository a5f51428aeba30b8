"""Read-only figures about the outbox, for the admin console (a selector: no writes)."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from django.db.models import Count, Min
from django.utils import timezone

from apps.eventstore.models import OutboxMessage


class Backlog(TypedDict):
    unpublished: int
    oldest_created_at: datetime | None
    oldest_seconds: float | None


def backlog(*, now: datetime | None = None) -> Backlog:
    """Return the unpublished outbox rows at a glance: how many (``unpublished``), when the
    oldest was written (``oldest_created_at``) and its age in seconds (``oldest_seconds``),
    both ``None`` when nothing waits.

    One aggregate over the ``outbox_unpublished_idx`` partial index, so it stays cheap
    however many published rows the table keeps.
    """
    now = now or timezone.now()
    row = OutboxMessage.objects.filter(published_at__isnull=True).aggregate(
        unpublished=Count("pk"), oldest=Min("created_at")
    )
    oldest = row["oldest"]
    return {
        "unpublished": row["unpublished"],
        "oldest_created_at": oldest,
        "oldest_seconds": (now - oldest).total_seconds() if oldest else None,
    }
