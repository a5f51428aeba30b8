"""Projections: read models built from the log, with a checkpoint and a zero-downtime rebuild.

A projection keeps its rows in *generations*. Readers and the live handler use the current
generation; a rebuild fills the next one from the whole log while reads go on, then:

1. catches up batch by batch until a read returns less than a batch;
2. in one transaction holding the append lock (no event can commit meanwhile), applies the
   last events and makes the new generation current;
3. deletes the old generation's rows.

The live path (the follower of ``apps.eventstore.following``) reads the current generation
and checkpoint in each of its transactions, under the checkpoint row's lock that the switch
takes too. An event that commits after step 2 is applied after that commit, so it lands in
the new generation; one that committed before it is in the log the rebuild read. Nothing is
lost in the switch.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from django.db import connection, transaction
from django.db.models import QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.eventstore.models import Event, ProjectionState
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import read_all, take_append_lock


class ProjectionRows(Protocol):
    def apply(self, event: RecordedEvent, generation: int) -> None:
        """Apply one event (the live path): skip it if applied, refuse it if early."""

    def apply_live_batch(self, events: list[RecordedEvent], generation: int) -> list[RecordedEvent]:
        """Apply events in log order at once to a live generation (the follower's path),
        as ``apply`` does each of them, rows other writers may have touched included;
        return, unapplied, those ``apply`` would refuse as early, with the later events of
        their streams."""

    def apply_batch(self, events: list[RecordedEvent], generation: int) -> None:
        """Apply events in log order at once (the rebuild path; may defer derived rows).

        Called only by ``rebuild``: on a generation it cleared first, batch after batch in
        log order, so an implementation may assume rows exist only for streams it saw.
        """

    def finish(self, generation: int) -> None:
        """Complete a rebuilt generation before it goes live (e.g. derive counters)."""

    def clear(self, generation: int) -> None:
        """Delete a generation's rows."""


@dataclass(frozen=True)
class Projection:
    """A named read model: which events it reads, and how it writes a generation's rows."""

    name: str
    event_types: frozenset[str]
    rows: ProjectionRows

    def apply_live(self, event: RecordedEvent) -> None:
        """Apply one event to the current generation (an event a follower's batch handed on,
        or a replayed dead letter). The checkpoint is the follower's alone to move."""
        self.rows.apply(event, current_generation(self.name))


class RebuildInProgress(Exception):
    """Another rebuild of the projection has not finished (pass force to take it over)."""


@dataclass(frozen=True)
class RebuildReport:
    events: int
    seconds: float
    generation: int

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


_registry: dict[str, Projection] = {}


def register(projection: Projection) -> Projection:
    _registry[projection.name] = projection
    return projection


def projection(name: str) -> Projection:
    """Return the registered projection ``name`` (``KeyError`` if none)."""
    return _registry[name]


def names() -> list[str]:
    return sorted(_registry)


def _state(name: str) -> ProjectionState:
    state, _ = ProjectionState.objects.get_or_create(name=name)
    return state


def current_generation(name: str) -> int:
    """Return the generation readers of projection ``name`` must use."""
    return _state(name).generation


def live_generation(name: str) -> Coalesce:
    """Return the live generation of ``name`` as an expression for a read model's filter.

    The database resolves it inside the read's own query (a rebuild's switch is seen at
    once) instead of a query of its own per request. No state yet means generation 1.
    """
    state = ProjectionState.objects.filter(name=name).values("generation")[:1]
    return Coalesce(Subquery(state), Value(1))


def checkpoint(name: str) -> int:
    """Return the highest log position projection ``name`` has applied (0 before any)."""
    state = ProjectionState.objects.filter(name=name).values_list("position", flat=True)
    return state.first() or 0


def _unapplied(name: str) -> QuerySet[Event]:
    """The projection's events past its checkpoint. Only its own event types count: other
    apps' events after the checkpoint are nothing it has left to do."""
    return Event.objects.filter(
        type__in=projection(name).event_types, position__gt=checkpoint(name)
    )


def lag(name: str) -> int:
    """Return how many events the projection reads are past its checkpoint (a caught-up
    projection has a lag of 0)."""
    return _unapplied(name).count()


def behind(name: str) -> bool:
    """Return whether any event the projection reads is past its checkpoint."""
    return _unapplied(name).exists()


def count_events(name: str) -> int:
    return Event.objects.filter(type__in=projection(name).event_types).count()


def rebuild(
    name: str,
    *,
    batch: int = 1000,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> RebuildReport:
    """Rebuild projection ``name`` from the whole log into a new generation; see the module."""
    target = _claim_rebuild(name, force)
    rows = projection(name).rows
    started = time.perf_counter()
    rows.clear(target)
    applied, cursor = 0, 0
    with _collecting_per_batch() as batch_done:
        for events in _prefetched(name, batch):
            with transaction.atomic():
                rows.apply_batch(events, target)
            applied += len(events)
            cursor = events[-1].position if events else cursor
            batch_done()
            if progress:
                progress(len(events))
    with transaction.atomic():
        take_append_lock()
        while (step := _apply_batch(name, target, cursor, batch))[0]:
            applied, cursor = applied + step[0], step[1]
        rows.finish(target)
        old = _switch(name, target, cursor)
    rows.clear(old)
    return RebuildReport(applied, time.perf_counter() - started, target)


# How many more objects the collector's young generation may hold than after the last
# collection before a rebuild collects (see ``_collecting_per_batch``).
YOUNG_OBJECTS_LIMIT = 250_000


@contextmanager
def _collecting_per_batch() -> Iterator[Callable[[], object]]:
    """Run Python's cyclic garbage collector between batches, and only when it has grown.

    A batch allocates some ten objects per event; counted by allocations, the collector
    ran every few hundred events and each run walked the growing older generations too (a
    third of a rebuild's time). Paused here, the collector is asked to run after a batch
    only once its young generation holds ``YOUNG_OBJECTS_LIMIT`` more objects than after
    the last run: a batch's objects are freed by their reference counts, so the young
    generation holds what lives on (the next batch, read ahead: ~60,000 objects for 2,000
    todo events) and grows only by cyclic garbage. Collecting after every batch walked
    those live objects each time for nothing (200,000 todo events left 16 objects in
    cycles; the collections were 9 % of the rebuild). The collector resumes as it was
    after the rebuild.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    after_last = gc.get_count()[0]

    def batch_done() -> None:
        nonlocal after_last
        after_last = min(after_last, gc.get_count()[0])  # someone else may have collected
        if gc.get_count()[0] - after_last > YOUNG_OBJECTS_LIMIT:
            gc.collect(1)
            after_last = gc.get_count()[0]

    try:
        yield batch_done
    finally:
        if was_enabled:
            gc.enable()


def _claim_rebuild(name: str, force: bool) -> int:
    state = _state(name)
    claimed = ProjectionState.objects.filter(name=name)
    if not force:
        claimed = claimed.filter(rebuilding__isnull=True)
    target = state.generation + 1
    if not claimed.update(rebuilding=target, rebuild_started_at=timezone.now()):
        raise RebuildInProgress(f"projection {name} is already being rebuilt")
    return target


def _prefetched(name: str, batch: int) -> Iterator[list[RecordedEvent]]:
    """Yield the projection's events from the start of the log, ``batch`` at a time, until
    a read returns less than a batch (that last one included).

    The next batch is read and decoded in a second thread, on its own connection, while
    the caller applies this one: the database reads while Python writes, and the other
    way round (~15 % of a rebuild on two cores). Inside a transaction (which another
    connection could not see into) batches are read one after the other.
    """
    types = projection(name).event_types

    def read(after: int) -> list[RecordedEvent]:
        return read_all(after_position=after, limit=batch, types=types)

    if connection.in_atomic_block:  # another connection could not see its uncommitted rows
        events = read(0)
        yield events
        while len(events) == batch:
            events = read(events[-1].position)
            yield events
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rebuild-{name}") as reader:
        try:
            events = read(0)
            while True:
                ahead = reader.submit(read, events[-1].position) if len(events) == batch else None
                yield events
                if ahead is None:
                    return
                events = ahead.result()
        finally:
            reader.submit(lambda: connection.close()).result()  # the reading thread's own


def _apply_batch(name: str, generation: int, after: int, batch: int) -> tuple[int, int]:
    events = read_all(after_position=after, limit=batch, types=projection(name).event_types)
    with transaction.atomic():
        projection(name).rows.apply_batch(events, generation)
    return len(events), events[-1].position if events else after


def _switch(name: str, target: int, position: int) -> int:
    state = ProjectionState.objects.select_for_update().get(name=name)
    old = state.generation
    state.generation, state.rebuilding, state.rebuilt_at = target, None, timezone.now()
    state.position = max(position, state.position)
    state.save()
    return old
