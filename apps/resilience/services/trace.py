"""The correlation trace: everything one correlation id set off, in time order.

Events, their deliveries, failed attempts and dead letters come from the event store and
this app; apps above this one in the layers (sagas) add their rows through
``register_source``, so this module never imports them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db.models.fields.json import KeyTextTransform

from apps.eventstore.models import Event
from apps.resilience.models import Attempt, DeadLetter, Delivery


@dataclass(frozen=True)
class TraceEntry:
    """One row of the trace: when, what happened, where (stream, handler, saga), status."""

    at: datetime
    what: str
    where: str
    status: str


Source = Callable[[uuid.UUID], list[TraceEntry]]
_sources: list[Source] = []


def register_source(source: Source) -> Source:
    """Add ``source`` (rows of another app sharing a correlation id) to every trace."""
    if source not in _sources:
        _sources.append(source)
    return source


def correlation_of(event_id: uuid.UUID | None) -> uuid.UUID | None:
    """Return the correlation id in the metadata of event ``event_id``, if any."""
    if event_id is None:
        return None
    metadata = Event.objects.filter(event_id=event_id).values_list("metadata", flat=True).first()
    value = (metadata or {}).get("correlation_id")
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def correlation_trace(correlation_id: uuid.UUID, *, limit: int = 500) -> list[TraceEntry]:
    """Return every event, delivery, attempt, dead letter (and registered source's row)
    sharing ``correlation_id``, oldest first."""
    events = list(
        Event.objects.annotate(correlation=KeyTextTransform("correlation_id", "metadata"))
        .filter(correlation=str(correlation_id))
        .order_by("position")[:limit]
    )
    ids = [event.event_id for event in events]
    entries = [
        TraceEntry(event.recorded_at, f"event {event.type}", _stream(event), "recorded")
        for event in events
    ]
    entries += _deliveries(ids) + _attempts(ids) + _letters(ids)
    for source in _sources:
        entries += source(correlation_id)
    return sorted(entries, key=lambda entry: entry.at)


def _stream(event: Event) -> str:
    return f"{event.stream_type}/{event.stream_id} v{event.version}"


def _deliveries(ids: list[uuid.UUID]) -> list[TraceEntry]:
    return [
        TraceEntry(row.created_at, f"delivery of {row.event_id}", row.handler, row.status)
        for row in Delivery.objects.filter(event_id__in=ids)
    ]


def _attempts(ids: list[uuid.UUID]) -> list[TraceEntry]:
    rows = Attempt.objects.filter(delivery__event_id__in=ids).select_related("delivery")
    return [
        TraceEntry(
            row.at,
            f"attempt {row.number}: {row.exception_type}",
            row.delivery.handler,
            f"{row.kind} → {row.outcome}",
        )
        for row in rows
    ]


def _letters(ids: list[uuid.UUID]) -> list[TraceEntry]:
    return [
        TraceEntry(
            row.first_failed_at, f"dead letter #{row.pk}: {row.kind}", row.handler, row.status
        )
        for row in DeadLetter.objects.filter(event_id__in=ids)
    ]
