"""Projections that follow the log: a batch of events per task, not a task per event.

A subscription made with ``handles(..., projection="todos")`` is the live path of a read
model that applies events in log order. The relay sends it no message per event; it
*nudges* the projection's follower (one ``backstop.projections.follow`` message, however
many events) and the follower reads what the log holds past the projection's checkpoint.
Each batch is one transaction:

1. take the projection's follower lock (one follower at a time; a second one waits);
2. clear the nudge flag, then read the log's complete position (``committed_position``):
   an event committed after the flag was cleared is either below that position, so read
   now, or its relay finds the flag clear and sends a new nudge;
3. lock the checkpoint row, read up to ``PROJECTION_BATCH_SIZE`` events past it (not past
   the complete position: the read is gap-free), apply them at once and move the
   checkpoint to the last one.

A batch that fails is applied again one event at a time. An event that still fails, and
every later event of its stream in the batch, is handed to the per-event path: a
``queued`` delivery in the ledger, written in the batch's transaction, and a ``deliver``
message sent once it commits. The runtime's retries, dead letters and parking take over
from there (the ledger re-sends a message that was never sent); the checkpoint moves past
them. A database that fails fails the whole batch, which a later nudge runs again.

Nudges are coalesced by a flag in the cache: the relay sets it with ``add`` (only the first
of many sends a message) and a follower clears it as it starts a batch. The flag expires
(``PROJECTION_NUDGE_TTL_SECONDS``) and the outbox sweep nudges every projection whose
checkpoint is behind the log, so a lost message (a flushed broker) delays a projection
but never stalls it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from apps.eventstore import projections, relay
from apps.eventstore.models import Event, ProjectionState
from apps.eventstore.reading import committed_position, read_all
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
    """Send a follower to every followed projection whose checkpoint is behind the log (the
    outbox sweep's second half); return their names."""
    behind = []
    for name in sorted(followed()):
        checkpoint = (
            ProjectionState.objects.filter(name=name).values_list("position", flat=True).first()
        )
        types = projections.projection(name).event_types
        if Event.objects.filter(type__in=types, position__gt=checkpoint or 0).exists():
            send_follow(name)
            behind.append(name)
    return behind


def follow(name: str) -> int:
    """Apply what the log holds past ``name``'s checkpoint, batch after batch; return how
    many events were applied or handed on.

    Stops after a batch shorter than ``PROJECTION_BATCH_SIZE`` (caught up), or once it has
    run ``PROJECTION_FOLLOW_SECONDS`` with more to do: it then sends itself again, so the
    worker's other tasks run in between.
    """
    started, done = time.monotonic(), 0
    while True:
        count = follow_batch(name)
        done += count
        if count < settings.PROJECTION_BATCH_SIZE:
            return done
        if time.monotonic() - started >= settings.PROJECTION_FOLLOW_SECONDS:
            send_follow(name)
            return done


def follow_batch(name: str) -> int:
    """Apply one batch past ``name``'s checkpoint; see the module. Return its size."""
    projection = projections.projection(name)
    handler = followed()[name]
    projections.current_generation(name)  # the checkpoint row exists before it is locked
    with transaction.atomic():
        _take_follower_lock(name)
        _clear_flag(name)
        complete = committed_position()
        state = ProjectionState.objects.select_for_update().get(name=name)
        events = read_all(
            after_position=state.position,
            limit=settings.PROJECTION_BATCH_SIZE,
            types=projection.event_types,
            up_to=complete,
        )
        if not events:
            return 0
        handed = _apply(projection, events, state.generation)
        ProjectionState.objects.filter(name=name).update(
            position=events[-1].position, updated_at=timezone.now()
        )
        if handed:
            _hand_on(handler.name, handed)
    return len(events)


def _apply(
    projection: projections.Projection, events: list[RecordedEvent], generation: int
) -> list[RecordedEvent]:
    """Apply ``events``; return those handed on to the per-event path (see the module)."""
    try:
        with transaction.atomic():
            projection.rows.apply_live_batch(events, generation)
        return []
    except INFRASTRUCTURE:
        raise
    except Exception:
        logger.warning(
            "projection %s: a batch of %d events failed; applying them one at a time",
            projection.name,
            len(events),
            exc_info=True,
        )
    handed: list[RecordedEvent] = []
    troubled: set[Any] = set()
    for event in events:
        if event.stream_id not in troubled:
            try:
                with transaction.atomic():
                    projection.rows.apply(event, generation)
                continue
            except INFRASTRUCTURE:
                raise
            except Exception as exc:
                logger.warning(
                    "projection %s: event %s (#%d, %s) handed to the per-event path: %s: %s",
                    projection.name,
                    event.event_id,
                    event.position,
                    event.type,
                    type(exc).__name__,
                    exc,
                )
                troubled.add(event.stream_id)
        handed.append(event)
    return handed


def _hand_on(handler: str, events: list[RecordedEvent]) -> None:
    """Record the events' deliveries to ``handler`` in the ledger now, send them on commit."""
    ids = [event.event_id for event in events]
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


def _take_follower_lock(name: str) -> None:
    """Wait for the projection's follower lock, held until the transaction ends. SQLite
    runs one writing transaction at a time: the transaction is the lock."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [FOLLOWER_LOCK_CLASS, name]
            )


def _flag(name: str) -> str:
    return f"projection-nudge:{name}"


def _clear_flag(name: str) -> None:
    try:
        cache.delete(_flag(name))
    except Exception:  # the flag expires by itself; until then nudges are coalesced away
        logger.warning("projection nudge flag of %s not cleared", name, exc_info=True)
