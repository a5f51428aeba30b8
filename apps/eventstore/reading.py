"""Reading from the event log: one stream, the whole log in order, or one event.

Re-exported by ``apps.eventstore.store``, the event log's public entry; the ordering
guarantee that makes ``read_all`` gap-free is documented and enforced there, on the
append side.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pydantic
from django.db import connection
from django.db.models import Max, QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, JSONObject

from apps.eventstore.exceptions import EventDecodeError
from apps.eventstore.models import Event
from apps.eventstore.registry import (
    EventMetadata,
    RecordedEvent,
    decode,
    event_class,
    recorded_class,
)

#: The columns ``recorded_from_values`` takes, in order, for reads with ``values_list``.
RECORD_COLUMNS = (
    "position",
    "stream_type",
    "stream_id",
    "version",
    "type",
    "schema_version",
    "data",
    "metadata",
)


def to_recorded(row: Event) -> RecordedEvent:
    """Return a stored row as a typed event (upcast to the latest schema)."""
    return recorded_from_values(*(getattr(row, column) for column in RECORD_COLUMNS))


def recorded_from_values(
    position: int,
    stream_type: str,
    stream_id: uuid.UUID,
    version: int,
    type: str,
    schema_version: int,
    data: dict[str, Any] | str,
    metadata: dict[str, Any] | str,
) -> RecordedEvent:
    """Return a row read as ``values_list(*RECORD_COLUMNS)`` as a typed event.

    ``data`` and ``metadata`` may be the stored JSON text (see ``read_all``): pydantic then
    parses and validates in one pass.
    """
    return RecordedEvent(
        position=position,
        stream_type=stream_type,
        stream_id=stream_id,
        version=version,
        type=type,
        schema_version=schema_version,
        payload=decode(type, schema_version, data),
        metadata=(
            EventMetadata.model_validate_json(metadata)
            if isinstance(metadata, str)
            else EventMetadata.model_validate(metadata)
        ),
    )


def stream_exists(stream_id: uuid.UUID) -> bool:
    """Return whether any event was recorded for the stream."""
    return Event.objects.filter(stream_id=stream_id).exists()


def read_stream(stream_id: uuid.UUID, *, after_version: int = 0) -> list[RecordedEvent]:
    """Return the stream's events after ``after_version``, in version order."""
    rows = Event.objects.filter(stream_id=stream_id, version__gt=after_version).order_by("version")
    return [to_recorded(row) for row in rows]


def committed_position() -> int:
    """Return the highest position below which the log is complete: every event at or
    below it that will ever commit has committed.

    On PostgreSQL one statement takes the append lock exclusively (waiting for the appends
    in flight, which hold it shared, to commit or roll back), reads the highest position
    and releases it; see the ordering guarantee in ``apps.eventstore.store``. SQLite runs
    one writer at a time: its highest position is complete.

    From a transaction that has appended, the position counts its own events too; two such
    transactions reading at once wait for each other until PostgreSQL aborts one (a
    deadlock, a transient error). Refused (a ``DatabaseError``) at any isolation level but
    READ COMMITTED: an older snapshot would miss events committed while it waited.
    """
    if connection.vendor == "postgresql":
        from apps.eventstore import store  # the key lives with the appends (and tests swap it)

        with connection.cursor() as cursor:
            cursor.execute("SELECT eventstore_committed_position(%s)", [store.APPEND_LOCK_KEY])
            return int(cursor.fetchone()[0])
    return Event.objects.aggregate(last=Max("position"))["last"] or 0


def read_all(
    *,
    after_position: int = 0,
    limit: int = 1000,
    types: Iterable[str] | None = None,
    up_to: int | None = None,
) -> list[RecordedEvent]:
    """Return up to ``limit`` committed events after ``after_position``, in log order
    (only those of ``types``, when given; none past ``up_to``, a ``committed_position()``
    the caller read itself, when given).

    Gap-free under concurrent writers (see the ordering guarantee in ``apps.eventstore.store``):
    it reads only up to ``committed_position()``, so once a position has been returned, no
    event with a smaller position can commit later.

    Built for bulk reads (a rebuild reads the whole log through it): on PostgreSQL each
    row comes as one JSON text, the whole event, which pydantic parses and validates in one
    pass (``recorded_from_json``); elsewhere as tuples with their JSON as text.
    """
    complete = committed_position() if up_to is None else up_to
    rows = Event.objects.filter(position__gt=after_position, position__lte=complete)
    if types is not None:
        rows = rows.filter(type__in=list(types))
    rows = rows.order_by("position")
    if connection.vendor == "postgresql":
        whole = rows.annotate(record=Cast(_RECORD, TextField()))
        return [
            recorded_from_json(*values)
            for values in whole.values_list("type", "schema_version", "record")[:limit]
        ]
    rows = rows.annotate(
        data_text=Cast("data", TextField()), metadata_text=Cast("metadata", TextField())
    )
    columns = (*RECORD_COLUMNS[:-2], "data_text", "metadata_text")
    return [recorded_from_values(*values) for values in rows.values_list(*columns)[:limit]]


# A stored event as one JSON object with ``RecordedEvent``'s fields (PostgreSQL).
_RECORD = JSONObject(
    position="position",
    stream_type="stream_type",
    stream_id="stream_id",
    version="version",
    type="type",
    schema_version="schema_version",
    payload="data",
    metadata="metadata",
)


def recorded_from_json(type: str, schema_version: int, record: str) -> RecordedEvent:
    """Return a stored event read as one JSON text (``read_all``) as a typed event.

    At its type's latest schema version, the event is parsed and validated in one pass
    (``recorded_class``); an older one is parsed, and its payload upcast, first.
    """
    recorded = recorded_class(type)
    if schema_version != event_class(type).schema_version:
        fields = json.loads(record)
        return recorded_from_values(*(fields[name] for name in _JSON_FIELDS))
    try:
        return recorded.model_validate_json(record)
    except pydantic.ValidationError as exc:
        raise EventDecodeError(f"{type} v{schema_version} event is invalid: {exc}") from exc


_JSON_FIELDS = (*RECORD_COLUMNS[:-2], "payload", "metadata")  # _RECORD's names


def scan(
    *,
    after_position: int = 0,
    types: Iterable[str] | None = None,
    batch: int = 1000,
    progress: Callable[[int], object] | None = None,
) -> Iterator[RecordedEvent]:
    """Yield every committed event after ``after_position`` in log order (only those of
    ``types``, when given), read ``batch`` at a time through ``read_all``; ``progress`` is
    called with each batch's size (a progress bar's ``update``)."""
    types = None if types is None else list(types)
    while True:
        found = read_all(after_position=after_position, limit=batch, types=types)
        yield from found
        if progress is not None:
            progress(len(found))
        if len(found) < batch:
            return
        after_position = found[-1].position


def read_correlated(
    correlation_ids: Iterable[uuid.UUID], *, limit: int = 1000
) -> list[RecordedEvent]:
    """Return up to ``limit`` events sharing any of ``correlation_ids``, in log order: what
    the commands behind them set off, in every stream (sagas, reminders, notifications)."""
    wanted = sorted({str(value) for value in correlation_ids})
    if not wanted:
        return []
    rows: QuerySet[Event]
    if connection.vendor == "postgresql":
        # The key as text, which the expression index holds.
        key = KeyTextTransform("correlation_id", "metadata")
        rows = Event.objects.alias(correlation=key).filter(correlation__in=wanted)
    else:  # SQLite (the embedded default) compares a JSON key with JSON-encoded values
        rows = Event.objects.filter(metadata__correlation_id__in=wanted)
    rows = rows.order_by("position")[:limit]
    return [to_recorded(row) for row in rows]


def load_event(event_id: uuid.UUID) -> RecordedEvent:
    """Return one event by its id (raises ``Event.DoesNotExist``)."""
    return to_recorded(Event.objects.get(event_id=event_id))
