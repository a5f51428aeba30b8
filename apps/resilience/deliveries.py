"""The delivery row's bookkeeping: what one run of a (handler, event) pair records.

A run counts its start in the pair's ``Delivery`` row (``_start``), runs the handler with
the processed mark ``(handler, event_id)`` in one transaction (``_run_handler``), and
records its end (``_finish``). Redis remembers processed pairs as a fast path in front of
the database mark (``_done_fast``, ``_remember``); the database mark is the truth.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.subscriptions import Subscription
from apps.resilience.breakers import write_pending_transitions
from apps.resilience.models import Delivery, ProcessedMessage
from apps.resilience.services import dead_letters, ledger, parking

logger = logging.getLogger(__name__)
Status = Delivery.Status


@dataclass(frozen=True)
class Started:
    """The delivery row as the current run found it."""

    id: int
    starts: int
    finishes: int
    attempts: int
    troubled: bool = False  # an ordered handler's stream has an open dead letter or parking
    replay_of: int | None = None  # the dead letter this run retries
    stray: bool = False  # a copy of a message for a dead-lettered pair: ignored
    resends: int = 0  # messages the reconciler has sent for the pair so far

    @property
    def worker_losses(self) -> int:
        return self.starts - 1 - self.finishes


@dataclass
class _Progress:
    """Whether this run has a start recorded that no finish has matched yet."""

    open_start: bool = False


def _start(sub: Subscription, row: Event, forgive: int, dead_letter_id: int | None) -> Started:
    """Count one more start of the (handler, event) delivery in its own committed statement.

    ``forgive`` earlier starts ended without their worker dying (re-queued after an
    infrastructure error) and count as finished. For an ordered handler the same statement
    tells whether the stream is in trouble (an open dead letter or a parked event), saving
    a round trip. The row is due for the reconciler once the run is past its time limit.
    """
    now = timezone.now()
    field = Delivery._meta.get_field("event_id")
    params = [
        sub.name,
        field.get_db_prep_value(row.event_id, connection),
        now,
        now,
        ledger.running_deadline(sub, now),
        forgive,
    ]
    trouble, trouble_params = (
        parking.trouble_sql(sub.name, row.stream_id) if sub.ordered else ("false", [])
    )
    # A message for a dead-lettered pair that is not its replay (which re-queues the pair
    # first) is a stray copy of the failed one: the dead letter is the end until retried.
    stray = "resilience_delivery.status = 'dead_lettered'" if dead_letter_id is None else "false"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO resilience_delivery
                (handler, event_id, status, starts, finishes, attempts, last_kind, last_error,
                 created_at, updated_at, reconcile_at, resends)
            VALUES (%s, %s, 'running', 1, 0, 0, '', '', %s, %s, %s, 0)
            ON CONFLICT (handler, event_id) DO UPDATE
                SET starts = resilience_delivery.starts + 1,
                    finishes = resilience_delivery.finishes + %s
                        + (CASE WHEN {stray} THEN 1 ELSE 0 END),
                    status = CASE WHEN {stray} THEN resilience_delivery.status ELSE 'running' END,
                    reconcile_at = CASE WHEN {stray} THEN NULL ELSE EXCLUDED.reconcile_at END,
                    updated_at = EXCLUDED.updated_at
            RETURNING id, starts, finishes, attempts, {trouble}, replay_of_id,
                status = 'dead_lettered', resends
            """,
            params + trouble_params,
        )
        pk, starts, finishes, attempts, troubled, replay_of, is_stray, resends = cursor.fetchone()
        started = Started(
            pk, starts, finishes, attempts, troubled, replay_of, stray=is_stray, resends=resends
        )
    if dead_letter_id is not None and started.replay_of is None:  # a message sent before
        started = replace(started, replay_of=dead_letter_id)  # the ledger knew replays
    return started


def _finish(started: Started, status: str, **fields: Any) -> None:
    """Record the end of this run: the delivery's new status and what goes with it."""
    if status in (Status.SUCCEEDED, Status.DEAD_LETTERED, Status.PARKED):
        fields.setdefault("reconcile_at", None)
    if status in (Status.SUCCEEDED, Status.DEAD_LETTERED):
        fields.setdefault("replay_of", None)
    Delivery.objects.filter(pk=started.id).update(
        status=status, finishes=F("finishes") + 1, updated_at=timezone.now(), **fields
    )


def _processed_key(handler: str, event_id: uuid.UUID) -> str:
    return f"processed:{handler}:{event_id}"


def _done_fast(handler: str, event_id: uuid.UUID) -> bool:
    """Return True when Redis remembers the pair as processed; Redis down means "don't know"."""
    try:
        return cache.get(_processed_key(handler, event_id)) is not None
    except Exception:  # the database mark below is the truth; the cache only saves work
        logger.warning("processed-mark cache unavailable; relying on the database", exc_info=True)
        return False


def _run_handler(sub: Subscription, recorded: RecordedEvent, started: Started) -> bool:
    """Run the handler, insert its processed mark and complete the delivery, all in one
    transaction; return False if an earlier delivery had already done the work."""
    try:
        with transaction.atomic():
            # False: a concurrent or earlier delivery already committed its effect.
            fresh = _mark_processed(sub.name, recorded.event_id)
            if fresh:
                sub.func(recorded)
            _complete(sub, recorded, started)
    finally:
        write_pending_transitions()  # breaker transitions outlive the handler's rollback
    return fresh


def _complete(sub: Subscription, recorded: RecordedEvent, started: Started) -> None:
    """Mark the delivery succeeded, resolve the dead letter it retried, and release the
    stream's next parked event: in the caller's transaction, so none of it can be lost
    between the handler's commit and a later step."""
    _finish(started, Status.SUCCEEDED, last_error="")
    if started.replay_of is not None:
        dead_letters.retry_succeeded(started.replay_of)
    if started.troubled:
        parking.release_next(sub.name, recorded.stream_id)


def _mark_processed(handler: str, event_id: uuid.UUID) -> bool:
    """Insert the processed mark; False when it exists. A concurrent delivery's uncommitted
    mark makes this wait for that transaction, then answer by its outcome."""
    field = ProcessedMessage._meta.get_field("event_id")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO resilience_processedmessage (handler, event_id, processed_at)"
            " VALUES (%s, %s, %s) ON CONFLICT (handler, event_id) DO NOTHING RETURNING id",
            [handler, field.get_db_prep_value(event_id, connection), timezone.now()],
        )
        return cursor.fetchone() is not None


def _remember(sub: Subscription, recorded: RecordedEvent) -> None:
    logger.info("delivered %s #%s to %s", recorded.type, recorded.position, sub.name)
    try:
        cache.set(
            _processed_key(sub.name, recorded.event_id),
            1,
            settings.RESILIENCE_PROCESSED_CACHE_SECONDS,
        )
    except Exception:
        logger.warning("could not remember a processed mark in the cache", exc_info=True)
