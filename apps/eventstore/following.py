"""Projections that follow the log: a batch of events per task, not a task per event.

A subscription made with ``handles(..., projection="todos")`` is the live path of a read
model that applies events in log order. The relay sends it no message per event; it
*nudges* the projection's follower (one ``backstop.projections.follow`` message, however
many events) and the follower reads what the log holds past the projection's checkpoint.
Each batch is one transaction:

1. take the projection's follower lock (one follower at a time: a second one leaves the
   first a note to look again, and returns);
2. read the log's complete position (``committed_position``): no event below it can
   commit later;
3. lock the checkpoint row, read up to ``PROJECTION_BATCH_SIZE`` events past it (not past
   the complete position: the read is gap-free), apply them at once and move the
   checkpoint to the last one.

Events the read model refuses as early (a todo whose earlier event was handed on) are
handed on too. A batch that fails, or holds an event this process can't decode (corrupt,
or of a schema version a newer release wrote), is applied again one event at a time. An
event that still fails, and every later event of its stream in the batch, is handed to
the per-event path: a
``queued`` delivery in the ledger, written in the batch's transaction, and a ``deliver``
message sent once it commits. The runtime's retries, dead letters and parking take over
from there (the ledger re-sends a message that was never sent); the checkpoint moves past
them. A database that fails fails the whole batch, which a later nudge runs again.

Nudges are coalesced by a flag in the cache: the relay sets it with ``add`` (only the first
of many sends a message), and a follower clears it once a batch found nothing new, then
reads once more: an event committed before the flag was cleared is read then, and the
relay of one committed after finds the flag clear and sends a new nudge. The flag expires
(``PROJECTION_NUDGE_TTL_SECONDS``) and the outbox sweep nudges every projection whose
checkpoint is behind the log, so a lost message (a flushed broker) delays a projection
but never stalls it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from apps.eventstore import projections, relay
from apps.eventstore.models import Event, ProjectionState
from apps.eventstore.reading import committed_position, read_all, to_recorded
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.subscriptions import Subscription, all_subscriptions

FOLLOW_TASK = "backstop.projections.follow"
# The advisory lock class of followers (the second key is the projection name's hash).
FOLLOWER_LOCK_CLASS = 1886547814
# Errors of the database itself: the batch is run again later, nothing is handed on.
INFRASTRUCTURE = (OperationalError, InterfaceError)
logger = logging.getLogger(__name__)


def followed() -> dict[str, Subscription]:
    """Return each followed projection's name and the subscription that is its live path."""
    return {sub.projection: sub for sub in all_subscriptions() if sub.projection}


def nudge(name: str, *, producer: Any = None) -> bool:
    """Ask for a run of ``name``'s follower unless one is already asked for; return whether
    a message was sent. Without the cache, every nudge sends its message."""
    try:
        if not cache.add(_flag(name), 1, settings.PROJECTION_NUDGE_TTL_SECONDS):
            return False
    except Exception:
        logger.warning("projection nudge flag unavailable; nudging %s anyway", name, exc_info=True)
    try:
        send_follow(name, producer=producer)
    except Exception:
        _clear_flag(name)  # the next relay (or the sweep) nudges again
        raise
    return True


def send_follow(name: str, *, producer: Any = None) -> None:
    """Send one ``follow(name)`` message (no coalescing)."""
    current_app.send_task(
        FOLLOW_TASK,
        args=(name,),
        queue=followed()[name].queue,
        producer=producer,
        retry=True,
        retry_policy=settings.CELERY_TASK_PUBLISH_RETRY_POLICY,
    )


def nudge_lagging() -> list[str]:
    """Nudge every followed projection whose checkpoint is behind the log (the outbox
    sweep's second half); return their names. The nudge is coalesced like the relay's: a
    flag left by a lost message expires (``PROJECTION_NUDGE_TTL_SECONDS``) and a later
    sweep sends one then."""
    behind = []
    for name in sorted(followed()):
        if projections.behind(name):
            nudge(name)
            behind.append(name)
    return behind


def follow(name: str) -> int:
    """Apply what the log holds past ``name``'s checkpoint, batch after batch, until a batch
    finds nothing new; return how many events were applied or handed on.

    The nudge flag stays set while batches find events (further nudges coalesce onto this
    run); once one finds none, the flag is cleared and one more batch reads what committed
    before that. While this runs, a second follower does not wait for it: it leaves a note
    (``again``) and returns, and this one reads the note after its last batch committed
    and looks once more. After ``PROJECTION_FOLLOW_SECONDS`` with more to do it sends
    itself again, so the worker's other tasks run in between.
    """
    projections.current_generation(name)  # the checkpoint row exists before it is locked
    started, done, cleared = time.monotonic(), 0, False
    while True:
        count = _follow_batch(name)
        if count is None:  # another follower runs, and has been asked to look again
            return done
        done += count
        if count:
            cleared = False
        elif not cleared:
            _clear_flag(name)
            cleared = True
            continue
        elif _take_again(name):
            cleared = False  # a nudge came meanwhile: its flag may be set again, clear it too
        else:
            return done
        if time.monotonic() - started >= settings.PROJECTION_FOLLOW_SECONDS:
            send_follow(name)
            return done


def _follow_batch(name: str) -> int | None:
    """Apply one batch past ``name``'s checkpoint (see the module) and return its size, or
    None when another follower holds the projection.

    That one may be past its last read already: the ``again`` note is written before the
    second try of the lock, and read by the holder after it released the lock, so either
    the second try succeeds or the holder sees the note.
    """
    projection = projections.projection(name)
    handler = followed()[name]
    with transaction.atomic():
        if not _try_follower_lock(name):
            if not _ask_again(name):
                _take_follower_lock(name)  # without the cache: wait for the holder
            elif not _try_follower_lock(name):
                return None
        complete = committed_position()
        state = ProjectionState.objects.select_for_update().get(name=name)
        batch = _read(projection, state.position, complete)
        if not batch.positions:
            return 0
        handed = _apply(projection, batch, state.generation)
        ProjectionState.objects.filter(name=name).update(
            position=max(batch.positions), updated_at=timezone.now()
        )
        if handed:
            _hand_on(handler.name, handed)
    return len(batch.positions)


@dataclass(frozen=True)
class _Undecodable:
    """A stored event this process can't decode (corrupt, or of a newer schema version)."""

    position: int
    stream_id: uuid.UUID
    event_id: uuid.UUID
    error: str


@dataclass(frozen=True)
class _Batch:
    events: list[RecordedEvent]
    undecodable: list[_Undecodable]

    @property
    def positions(self) -> list[int]:
        return [e.position for e in self.events] + [u.position for u in self.undecodable]


def _read(projection: projections.Projection, after: int, complete: int) -> _Batch:
    """Read the next batch; if it can't all be decoded, decode its events one at a time."""
    try:
        events = read_all(
            after_position=after,
            limit=settings.PROJECTION_BATCH_SIZE,
            types=projection.event_types,
            up_to=complete,
        )
        return _Batch(events, [])
    except INFRASTRUCTURE:
        raise
    except Exception:
        logger.warning(
            "projection %s: a batch after #%d can't all be decoded; decoding one at a time",
            projection.name,
            after,
            exc_info=True,
        )
    rows = Event.objects.filter(
        type__in=projection.event_types, position__gt=after, position__lte=complete
    ).order_by("position")[: settings.PROJECTION_BATCH_SIZE]
    batch = _Batch([], [])
    for row in rows:
        try:
            batch.events.append(to_recorded(row))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            batch.undecodable.append(_Undecodable(row.position, row.stream_id, row.event_id, error))
    return batch


def _apply(projection: projections.Projection, batch: _Batch, generation: int) -> list[uuid.UUID]:
    """Apply a batch; return the ids of the events handed on to the per-event path: those
    the rows refused as early (a todo whose earlier event was handed on), and, if the
    batch fails or holds an event that can't be decoded, each event that fails alone and
    the later ones of its stream (see the module)."""
    if not batch.undecodable:
        try:
            with transaction.atomic():
                refused = projection.rows.apply_live_batch(batch.events, generation)
            return [event.event_id for event in refused]
        except INFRASTRUCTURE:
            raise
        except Exception:
            logger.warning(
                "projection %s: a batch of %d events failed; applying them one at a time",
                projection.name,
                len(batch.events),
                exc_info=True,
            )
    failed = {u.position: u.error for u in batch.undecodable}
    items = [(e.position, e.stream_id, e.event_id, e) for e in batch.events] + [
        (u.position, u.stream_id, u.event_id, None) for u in batch.undecodable
    ]
    handed: list[uuid.UUID] = []
    troubled: set[uuid.UUID] = set()
    for position, stream_id, event_id, event in sorted(items, key=lambda item: item[0]):
        if stream_id not in troubled:
            try:
                if event is None:
                    raise _NotDecoded(failed[position])
                with transaction.atomic():
                    projection.rows.apply(event, generation)
                continue
            except INFRASTRUCTURE:
                raise
            except Exception as exc:
                logger.warning(
                    "projection %s: event %s (#%d) handed to the per-event path: %s: %s",
                    projection.name,
                    event_id,
                    position,
                    type(exc).__name__,
                    exc,
                )
                troubled.add(stream_id)
        handed.append(event_id)
    return handed


class _NotDecoded(Exception):
    """An event of the batch could not be decoded (the per-event path dead-letters it, or
    defers it until a process that knows its schema version runs it)."""


def _hand_on(handler: str, ids: list[uuid.UUID]) -> None:
    """Record the events' deliveries to ``handler`` in the ledger now, send them on commit."""
    relay.record_expected([(handler, event_id) for event_id in ids])

    def send() -> None:
        for event_id in ids:
            try:
                relay.send_delivery(handler, event_id)
            except Exception:  # the delivery is queued in the ledger, which re-sends it
                logger.warning(
                    "hand-on of %s to %s not sent; left to the ledger", event_id, handler
                )

    transaction.on_commit(send)


def _try_follower_lock(name: str) -> bool:
    """Take the projection's follower lock, held until the transaction ends, if it is free.
    SQLite runs one writing transaction at a time: the transaction is the lock."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", [FOLLOWER_LOCK_CLASS, name]
        )
        return bool(cursor.fetchone()[0])


def _take_follower_lock(name: str) -> None:
    """Wait for the projection's follower lock (held until the transaction ends)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [FOLLOWER_LOCK_CLASS, name]
            )


def _ask_again(name: str) -> bool:
    """Leave the running follower a note to look once more; False if the cache failed."""
    try:
        cache.set(_again(name), 1, settings.PROJECTION_NUDGE_TTL_SECONDS)
    except Exception:
        logger.warning("projection follower note unavailable; waiting instead", exc_info=True)
        return False
    return True


def _take_again(name: str) -> bool:
    """Return whether another follower asked this one to look again, and clear the note."""
    try:
        return bool(cache.delete(_again(name)))
    except Exception:  # a follower that couldn't write its note waited for the lock instead
        logger.warning("projection follower note of %s unreadable", name, exc_info=True)
        return False


def clear_nudges() -> None:
    """Forget every projection's nudge flag and note: a flag left by a message a replaced
    broker held would hold back the next nudges until it expires."""
    for name in followed():
        cache.delete_many([_flag(name), _again(name)])


def _flag(name: str) -> str:
    return f"projection-nudge:{name}"


def _again(name: str) -> str:
    return f"projection-again:{name}"


def _clear_flag(name: str) -> None:
    try:
        cache.delete(_flag(name))
    except Exception:  # the flag expires by itself; until then nudges are coalesced away
        logger.warning("projection nudge flag of %s not cleared", name, exc_info=True)
