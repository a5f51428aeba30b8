"""Appending to the event log, and the public entry for reading it (see ``reading``).

Ordering guarantee: a reader that reads ``position > checkpoint`` never skips an event that
commits late. Positions come from a sequence, and a sequence alone does not give this: a
transaction can draw position 10, stall, and commit after 11 was read. On PostgreSQL every
append holds one advisory lock *shared* from before it draws positions until it commits,
so appends run side by side (and share their WAL flushes); appends to one stream wait for
each other on a lock of that stream, so the second sees the first's version. A reader first asks for
``committed_position()``: one statement that takes the same lock *exclusively*, which
waits for the appends in flight to end, reads the highest position, and releases it. No
append is in flight at that moment, so every position at or below it that will ever commit
has committed; ``read_all`` reads no further. SQLite serializes writers anyway. A rebuild's
switch takes the lock exclusively for its whole transaction (``take_append_lock``): no event
commits meanwhile. ``make bench`` measures appends against raw inserts; PostgreSQL takes
the lock, checks versions and writes events and outbox rows in one call of the
``eventstore_append`` function (migrations 0005 and 0007): one round trip, which outside a
transaction commits by itself.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import pydantic_core
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone
from pydantic import TypeAdapter

from apps.eventstore import outbox_batch
from apps.eventstore.conflicts import (
    STREAM_VERSION_CONSTRAINT,
    VERSION_MISMATCH,
    conflict_from,
)
from apps.eventstore.exceptions import ConcurrencyConflict
from apps.eventstore.models import Event, OutboxMessage

# The reading side lives in apps.eventstore.reading; re-exported here, the public entry.
from apps.eventstore.reading import (
    RECORD_COLUMNS,
    committed_position,
    load_event,
    read_all,
    read_correlated,
    read_stream,
    recorded_from_values,
    scan,
    stream_exists,
    to_recorded,
)
from apps.eventstore.registry import DomainEvent, EventMetadata, RecordedEvent, encode

__all__ = [
    "APPEND_LOCK_KEY",
    "RECORD_COLUMNS",
    "STREAM_VERSION_CONSTRAINT",
    "VERSION_MISMATCH",
    "CommandContext",
    "StreamAppend",
    "append",
    "append_many",
    "committed_position",
    "load_event",
    "lock_for_transaction",
    "read_all",
    "read_correlated",
    "read_stream",
    "recorded_from_values",
    "scan",
    "stream_exists",
    "take_append_lock",
    "to_recorded",
]

# 'backstop' in ASCII: the advisory lock key appends take shared and readers exclusively.
APPEND_LOCK_KEY: int | None = 0x6261636B73746F70


@dataclass(frozen=True)
class CommandContext:
    """Who runs a command and what caused it; becomes every new event's metadata."""

    actor_id: str | None = None
    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None
    request_id: str | None = None

    def caused_by(self, recorded: RecordedEvent) -> CommandContext:
        """Return the context for work triggered by ``recorded``: same correlation, caused by it."""
        return CommandContext(
            actor_id=self.actor_id,
            correlation_id=recorded.metadata.correlation_id,
            causation_id=recorded.event_id,
            request_id=recorded.metadata.request_id,
        )


@dataclass(frozen=True)
class StreamAppend:
    """New events for one stream, written after ``expected_version``."""

    stream_type: str
    stream_id: uuid.UUID
    expected_version: int
    events: Sequence[DomainEvent]

    def __post_init__(self) -> None:
        if not isinstance(self.stream_id, uuid.UUID):  # a str from a URL, say
            object.__setattr__(self, "stream_id", uuid.UUID(str(self.stream_id)))


def append(
    *,
    stream_type: str,
    stream_id: uuid.UUID,
    expected_version: int,
    events: Sequence[DomainEvent],
    context: CommandContext,
) -> list[RecordedEvent]:
    """Append ``events`` to one stream after ``expected_version``; see ``append_many``."""
    return append_many(
        [StreamAppend(stream_type, stream_id, expected_version, events)], context=context
    )


def append_many(appends: Sequence[StreamAppend], *, context: CommandContext) -> list[RecordedEvent]:
    """Append to one or more streams atomically and return the events as recorded.

    1. Take the append lock shared, so readers wait for this append (see the module).
    2. Compare each stream's version with its ``expected_version``; a difference is a
       ``ConcurrencyConflict`` (the unique ``(stream_id, version)`` constraint backs it up).
    3. Insert the events and one outbox row each, in the caller's transaction.
    4. After commit, nudge the relay once per transaction to publish the new outbox rows.

    On PostgreSQL steps 1-3 are one call of the ``eventstore_append`` function (one round
    trip, see migrations 0005 and 0007), which outside a transaction commits by itself;
    elsewhere they run through the ORM.
    """
    appends = [a for a in appends if a.events]
    if not appends:
        return []
    if len({a.stream_id for a in appends}) != len(appends):
        raise ValueError("append_many takes each stream once")
    pending = _pending(appends, context)
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        # Outside a transaction the function's one statement is a transaction of its own:
        # one round trip instead of BEGIN, the call and COMMIT. on_commit runs at once.
        written = _append_in_postgres(appends, pending)
        if settings.OUTBOX_PUBLISH_ON_COMMIT:
            outbox_batch.publish_after_commit(written.outbox_ids, written.transaction_id)
    else:
        with transaction.atomic(savepoint=False):
            if connection.vendor == "postgresql":
                written = _append_in_postgres(appends, pending)
            else:
                written = _append_with_orm(appends, pending)
            if settings.OUTBOX_PUBLISH_ON_COMMIT:
                outbox_batch.publish_after_commit(written.outbox_ids, written.transaction_id)
    return [
        RecordedEvent(
            position=position,
            stream_type=p.stream_type,
            stream_id=p.stream_id,
            version=p.version,
            type=p.payload.event_type,
            schema_version=p.payload.schema_version,
            payload=p.payload,
            metadata=p.metadata,
        )
        for p, position in zip(pending, written.positions, strict=True)
    ]


@dataclass(slots=True)
class _Pending:
    """One new event, encoded, before it has a position."""

    stream_type: str
    stream_id: uuid.UUID
    version: int
    payload: DomainEvent
    metadata: EventMetadata


def _pending(appends: Sequence[StreamAppend], context: CommandContext) -> list[_Pending]:
    now = timezone.now()
    pending = []
    event_ids = iter(_new_event_ids(sum(len(a.events) for a in appends)))
    for a in appends:
        for offset, payload in enumerate(a.events, start=1):
            metadata = EventMetadata(
                event_id=next(event_ids),
                occurred_at=now,
                actor_id=context.actor_id,
                correlation_id=context.correlation_id,
                causation_id=context.causation_id,
                request_id=context.request_id,
            )
            pending.append(
                _Pending(
                    stream_type=a.stream_type,
                    stream_id=a.stream_id,
                    version=a.expected_version + offset,
                    payload=payload,
                    metadata=metadata,
                )
            )
    return pending


def _new_event_ids(count: int) -> list[uuid.UUID]:
    """``count`` random (version 4) UUIDs.

    ``uuid.uuid4()`` reads the OS's random source once per id and builds the UUID in
    Python (~3 µs); many ids are cut from one read instead, 16 bytes each, with the
    version and variant bits set as ``uuid4()`` sets them, and pydantic's validator
    makes the UUIDs (~1 µs each).
    """
    if count == 1:
        return [uuid.uuid4()]
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 4122 variant
    return _UUIDS.validate_python([bytes(raw[i : i + 16]) for i in range(0, 16 * count, 16)])


_UUIDS = TypeAdapter(list[uuid.UUID])


class _Written(NamedTuple):
    """What an append wrote: event positions and outbox ids in the order of the pending
    events, and the database's id of the transaction (None where it has none to give)."""

    positions: list[int]
    outbox_ids: list[int]
    transaction_id: int | None


def _append_in_postgres(appends: Sequence[StreamAppend], pending: list[_Pending]) -> _Written:
    streams = [{"stream_id": a.stream_id, "expected": a.expected_version} for a in appends]
    events = [
        {
            "event_id": p.metadata.event_id,
            "stream_type": p.stream_type,
            "stream_id": p.stream_id,
            "version": p.version,
            "type": p.payload.event_type,
            "schema_version": p.payload.schema_version,
            "data": p.payload,  # serialized as encode() would, by pydantic's own serializer
            "metadata": p.metadata,
        }
        for p in pending
    ]
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT event_id, event_position, outbox_id, txid_current()"
                " FROM eventstore_append(%s::jsonb, %s::jsonb, %s)",
                [_json(streams), _json(events), APPEND_LOCK_KEY],
            )
            rows = cursor.fetchall()
    except DatabaseError as exc:
        first = appends[0]  # the constraint names no stream: blame the first
        if (conflict := conflict_from(exc, first.stream_id, first.expected_version)) is None:
            raise
        raise conflict from exc
    by_event = {event_id: (position, outbox_id) for event_id, position, outbox_id, _ in rows}
    placed = [by_event[p.metadata.event_id] for p in pending]
    return _Written(
        positions=[position for position, _ in placed],
        outbox_ids=[outbox_id for _, outbox_id in placed],
        transaction_id=rows[0][3],
    )


def _json(value: object) -> str:
    """Serialize in one pass, models included (their JSON is what ``model_dump(mode="json")``
    gives); the function's parameters are JSON text."""
    return pydantic_core.to_json(value, by_alias=False).decode()


def _append_with_orm(appends: Sequence[StreamAppend], pending: list[_Pending]) -> _Written:
    take_append_lock()
    versions = _current_versions([a.stream_id for a in appends])
    for a in appends:
        if versions.get(a.stream_id, 0) != a.expected_version:
            raise ConcurrencyConflict(a.stream_id, a.expected_version, versions.get(a.stream_id, 0))
    rows = [
        Event(
            event_id=p.metadata.event_id,
            stream_type=p.stream_type,
            stream_id=p.stream_id,
            version=p.version,
            type=p.payload.event_type,
            schema_version=p.payload.schema_version,
            data=encode(p.payload),
            metadata=p.metadata.model_dump(mode="json"),
        )
        for p in pending
    ]
    try:
        Event.objects.bulk_create(rows)
    except IntegrityError as exc:
        first = appends[0]  # the constraint names no stream: blame the first
        if (conflict := conflict_from(exc, first.stream_id, first.expected_version)) is None:
            raise
        raise conflict from exc
    outbox = OutboxMessage.objects.bulk_create([OutboxMessage(event=row) for row in rows])
    return _Written([row.position for row in rows], [m.pk for m in outbox], None)


def take_append_lock() -> None:
    """Hold the append lock exclusively until the transaction ends: no append can commit
    meanwhile (see the module docstring)."""
    if connection.vendor == "postgresql" and APPEND_LOCK_KEY is not None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [APPEND_LOCK_KEY])


def lock_for_transaction(name: str) -> None:
    """Hold the advisory lock ``name`` until the transaction ends (PostgreSQL; SQLite
    serialises writers anyway). Serialises check-then-write sections across processes."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])


def _current_versions(stream_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = (
        Event.objects.filter(stream_id__in=stream_ids)
        .order_by()
        .values("stream_id")
        .annotate(v=Max("version"))
        .values_list("stream_id", "v")
    )
    return dict(rows)
