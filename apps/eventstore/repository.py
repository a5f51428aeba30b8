"""Loading and saving aggregates, with snapshots and a bounded retry on conflicts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from django.conf import settings
from django.db import transaction

from apps.eventstore import store
from apps.eventstore.aggregates import Aggregate
from apps.eventstore.exceptions import ConcurrencyConflict, StreamNotFound
from apps.eventstore.models import Snapshot
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import CommandContext

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")
logger = logging.getLogger(__name__)


class Repository(Generic[A]):
    """Loads aggregates of one class from snapshot + later events, and saves new events."""

    def __init__(self, aggregate_class: type[A]) -> None:
        self.aggregate_class = aggregate_class

    def load(self, stream_id: uuid.UUID) -> A:
        """Return the aggregate at its latest version, or raise ``StreamNotFound``.

        A stream of another type (a reminder's id given as a todo's) is not found either:
        it holds no aggregate of this class, and the caller answers as for a missing one.
        """
        stream_type = self.aggregate_class.stream_type
        aggregate = self._from_snapshot(stream_id) or self.aggregate_class(stream_id)
        for recorded in store.read_stream(stream_id, after_version=aggregate.version):
            if recorded.stream_type != stream_type:
                raise StreamNotFound(stream_id)
            aggregate.apply(recorded.payload)
        if aggregate.version == 0:
            raise StreamNotFound(stream_id)
        return aggregate

    def save(self, aggregate: A, context: CommandContext) -> list[RecordedEvent]:
        """Append the aggregate's pending events atomically; return them as recorded.

        Raises ``ConcurrencyConflict`` when another writer saved the stream first.
        """
        return self.save_many([aggregate], context)

    def save_many(self, aggregates: list[A], context: CommandContext) -> list[RecordedEvent]:
        """Append the pending events of several aggregates in one transaction and lock."""
        appends = [
            store.StreamAppend(
                self.aggregate_class.stream_type, a.id, a.loaded_version, a.pending_events()
            )
            for a in aggregates
        ]
        snapshots = [a for a in aggregates if self._snapshot_due(a.loaded_version, a.version)]
        if snapshots:
            with transaction.atomic(savepoint=False):
                recorded = store.append_many(appends, context=context)
                for aggregate in snapshots:
                    self._take_snapshot(aggregate)
        else:  # on PostgreSQL with no transaction open, one statement (see append_many)
            recorded = store.append_many(appends, context=context)
        for aggregate in aggregates:
            aggregate.mark_saved()
        return recorded

    def _snapshot_due(self, before: int, after: int) -> bool:
        every = self.aggregate_class.snapshot_every
        if not every:
            return False
        return after // every > before // every  # crossed a multiple of N

    def _take_snapshot(self, aggregate: A) -> None:
        Snapshot.objects.update_or_create(
            stream_id=aggregate.id,
            defaults={
                "stream_type": self.aggregate_class.stream_type,
                "version": aggregate.version,
                "schema_version": self.aggregate_class.snapshot_schema,
                "state": aggregate.to_snapshot(),
            },
        )

    def _from_snapshot(self, stream_id: uuid.UUID) -> A | None:
        if not self.aggregate_class.snapshot_every:
            return None
        snapshot = Snapshot.objects.filter(
            stream_id=stream_id,
            stream_type=self.aggregate_class.stream_type,
            schema_version=self.aggregate_class.snapshot_schema,
        ).first()
        if snapshot is None:
            return None
        return self.aggregate_class.from_snapshot(stream_id, snapshot.version, snapshot.state)


def retry_on_conflict(command: Callable[[], R], *, attempts: int | None = None) -> R:
    """Run ``command`` (which must load afresh and save), re-running it on a conflict.

    Only for commands that are safe to re-run against newer state. After ``attempts``
    conflicts (``EVENTSTORE_CONFLICT_RETRIES`` by default) the last conflict is raised.
    """
    limit = attempts or settings.EVENTSTORE_CONFLICT_RETRIES
    for attempt in range(1, limit + 1):
        try:
            # A savepoint per attempt: a conflict is a database error on PostgreSQL, and
            # inside a caller's transaction the next attempt must not run in an aborted one.
            with transaction.atomic():
                return command()
        except ConcurrencyConflict:
            if attempt == limit:
                raise
            logger.debug("conflict on attempt %d of %d; reloading", attempt, limit)
    raise AssertionError("unreachable")
