"""Appending to and reading from the event log.

Ordering guarantee: on PostgreSQL every append takes one transaction-level advisory lock
before it draws positions, and holds it until commit. Positions therefore become visible in
the order they were handed out, and a subscriber that reads ``position > checkpoint`` never
skips an event that committed late (a sequence alone does not give this: a transaction can
draw position 10, stall, and commit after 11 was read). SQLite serializes writers anyway.
The price is that appends from all writers queue on the lock for the length of a commit;
``make bench`` measures it against raw inserts. To keep that window short, PostgreSQL takes
the lock, checks versions and writes events and outbox rows in one call of the
``eventstore_append`` function (migration 0005): one round trip between BEGIN and COMMIT.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pydantic_core
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Max, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from apps.eventstore import relay
from apps.eventstore.exceptions import ConcurrencyConflict
from apps.eventstore.models import Event, OutboxMessage
from apps.eventstore.registry import DomainEvent, EventMetadata, RecordedEvent, decode, encode

# 'backstop' in ASCII: the advisory lock key that serializes appends.
APPEND_LOCK_KEY: int | None = 0x6261636B73746F70
# The SQLSTATE eventstore_append raises when a stream is not at the expected version.
VERSION_MISMATCH = "BSV01"
# The unique constraint behind optimistic concurrency (see Event.Meta).
STREAM_VERSION_CONSTRAINT = "event_stream_version_uniq"


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

    1. Take the append lock, so positions commit in the order they are drawn.
    2. Compare each stream's version with its ``expected_version``; a difference is a
       ``ConcurrencyConflict`` (the unique ``(stream_id, version)`` constraint backs it up).
    3. Insert the events and one outbox row each, in the caller's transaction.
    4. After commit, nudge the relay once per transaction to publish the new outbox rows.

    On PostgreSQL steps 1-3 are one call of the ``eventstore_append`` function (one round
    trip, see migration 0005); elsewhere they run through the ORM.
    """
    appends = [a for a in appends if a.events]
    if not appends:
        return []
    if len({a.stream_id for a in appends}) != len(appends):
        raise ValueError("append_many takes each stream once")
    pending = _pending(appends, context)
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            written = _append_in_postgres(appends, pending)
        else:
            written = _append_with_orm(appends, pending)
        if settings.OUTBOX_PUBLISH_ON_COMMIT:
            _publish_after_commit(written.outbox_ids, written.transaction_id)
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
    for a in appends:
        for offset, payload in enumerate(a.events, start=1):
            metadata = EventMetadata(
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
        if (conflict := _conflict_from(exc, appends)) is None:
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


def _conflict_from(exc: DatabaseError, appends: Sequence[StreamAppend]) -> Exception | None:
    """Return the ``ConcurrencyConflict`` a database error means, or None if it is another
    error: the append function's version mismatch, or the unique (stream, version)
    constraint (only reachable when a writer bypassed the append lock)."""
    # Any: the driver's error (psycopg's, with ``diag``), read without importing the driver.
    cause: Any = exc.__cause__
    if getattr(cause, "sqlstate", None) == VERSION_MISMATCH:
        detail = json.loads(cause.diag.message_detail)
        return ConcurrencyConflict(
            uuid.UUID(detail["stream_id"]), detail["expected"], detail["actual"]
        )
    if isinstance(exc, IntegrityError) and _is_stream_version_violation(exc):
        first = appends[0]
        return ConcurrencyConflict(first.stream_id, first.expected_version, -1)
    return None


def _is_stream_version_violation(exc: IntegrityError) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    if diag is not None:  # PostgreSQL names the constraint
        return diag.constraint_name == STREAM_VERSION_CONSTRAINT
    return "stream_id" in str(exc) and "version" in str(exc)  # SQLite names the columns


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
        if (conflict := _conflict_from(exc, appends)) is None:
            raise
        raise conflict from exc
    outbox = OutboxMessage.objects.bulk_create([OutboxMessage(event=row) for row in rows])
    return _Written([row.position for row in rows], [m.pk for m in outbox], None)


# This thread's outbox batch per database alias: Django gives each thread its own connection,
# so a thread's transactions are the only ones that can add to its batches.
_batches = threading.local()


def _publish_after_commit(outbox_ids: list[int], transaction_id: int | None) -> None:
    """Nudge the relay once per transaction, with every outbox row it wrote.

    1. Add the ids to this thread's batch for the database, started afresh when the
       transaction id differs from the batch's: a transaction that rolled back never
       flushed its batch, and the next one must not inherit it.
    2. Register the batch's flush with ``on_commit``, once per append: a savepoint that
       rolls back discards the callbacks registered inside it, so the first append's
       callback may be gone while later appends' rows still need one. The first flush to
       run publishes the whole batch; the others find it empty.

    Ids appended inside a savepoint that rolled back stay in the batch, but their rows
    don't exist: the relay finds nothing to publish for them. Without a transaction id
    (SQLite) each append is a batch of its own.
    """
    batch = _batch_for(connection.alias, transaction_id)
    batch.ids.extend(outbox_ids)
    transaction.on_commit(batch.flush, using=connection.alias)


def _batch_for(alias: str, transaction_id: int | None) -> _OutboxBatch:
    """Return this thread's batch for the transaction on ``alias``, new if it has none."""
    if not hasattr(_batches, "by_alias"):
        _batches.by_alias = {}
    batch: _OutboxBatch | None = _batches.by_alias.get(alias)
    if batch is None or transaction_id is None or batch.transaction_id != transaction_id:
        batch = _batches.by_alias[alias] = _OutboxBatch(transaction_id)
    return batch


class _OutboxBatch:
    """The outbox ids one transaction wrote and has not yet handed to the relay."""

    def __init__(self, transaction_id: int | None) -> None:
        self.transaction_id = transaction_id
        self.ids: list[int] = []

    def flush(self) -> None:
        """Hand the ids collected so far to the relay, once."""
        ids, self.ids = self.ids, []
        if ids:
            relay.publish_after_commit(ids)


def take_append_lock() -> None:
    """Hold the append lock until the transaction ends (see the module docstring)."""
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


def read_all(
    *, after_position: int = 0, limit: int = 1000, types: Iterable[str] | None = None
) -> list[RecordedEvent]:
    """Return up to ``limit`` committed events after ``after_position``, in log order
    (only those of ``types``, when given).

    Gap-free under concurrent writers (see the module docstring): once a position has been
    returned, no event with a smaller position can commit later.

    Built for bulk reads (a rebuild reads the whole log through it): rows come as tuples
    with their JSON as text, which pydantic parses and validates in one pass.
    """
    rows = Event.objects.filter(position__gt=after_position)
    if types is not None:
        rows = rows.filter(type__in=list(types))
    rows = rows.annotate(
        data_text=Cast("data", TextField()), metadata_text=Cast("metadata", TextField())
    ).order_by("position")
    columns = (*RECORD_COLUMNS[:-2], "data_text", "metadata_text")
    return [recorded_from_values(*values) for values in rows.values_list(*columns)[:limit]]


def load_event(event_id: uuid.UUID) -> RecordedEvent:
    """Return one event by its id (raises ``Event.DoesNotExist``)."""
    return to_recorded(Event.objects.get(event_id=event_id))
