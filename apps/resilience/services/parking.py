"""Ordered handlers: later events of a stream wait behind its open dead letter, then go in order.

Parking and releasing a stream's events hold one advisory lock per (handler, stream) for
their transaction, so a check-then-park can't interleave with the release that would
have freed it: either the release sees the parked event, or the park sees the letter
closed. ``sweep`` releases whatever is still parked behind a closed letter all the same.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import lock_for_transaction
from apps.resilience.models import DeadLetter, Delivery, ParkedMessage
from apps.resilience.services import ledger

OPEN = DeadLetter.OPEN


def trouble_sql(handler: str, stream_id: object) -> tuple[str, list[object]]:
    """Return an SQL boolean expression (and its parameters): does the stream have an open
    dead letter or a parked event for ``handler``?

    The runtime evaluates it in the statement that records a delivery's start, so the
    common path pays no extra round trip; only a stream in trouble needs ``blocker`` and,
    after a success, a look for parked events to release."""
    prep = DeadLetter._meta.get_field("stream_id").get_db_prep_value(stream_id, connection)
    sql = (
        "(EXISTS (SELECT 1 FROM resilience_deadletter WHERE handler = %s AND stream_id = %s"
        f" AND status IN ({', '.join(['%s'] * len(OPEN))}))"
        " OR EXISTS (SELECT 1 FROM resilience_parkedmessage"
        " WHERE handler = %s AND stream_id = %s AND status = %s))"
    )
    pending = ParkedMessage.Status.PENDING
    return sql, [handler, prep, *OPEN, handler, prep, pending]


def _lock_stream(handler: str, stream_id: object) -> None:
    lock_for_transaction(f"parking:{handler}:{stream_id}")


def blocker(handler: str, recorded: RecordedEvent) -> DeadLetter | None:
    """Return the dead letter that holds ``recorded`` back from ``handler``, if any.

    An event is held back by an open dead letter of an earlier version of its stream, or by
    an earlier version that is itself still parked (it must go first, even when the letter
    that parked it has closed and its release is on its way).
    """
    earlier = {"handler": handler, "stream_id": recorded.stream_id}
    letter = (
        DeadLetter.objects.filter(**earlier, event_version__lt=recorded.version, status__in=OPEN)
        .order_by("event_version")
        .first()
    )
    if letter is not None:
        return letter
    parked = (
        ParkedMessage.objects.filter(**earlier, version__lt=recorded.version, status="pending")
        .select_related("blocked_by")
        .order_by("version")
        .first()
    )
    return parked.blocked_by if parked else None


def park_if_blocked(handler: str, recorded: RecordedEvent, delivery_id: int) -> bool:
    """Park ``recorded`` if something holds it back; return whether it was parked.

    Under the stream's lock: the check, the parked row and the delivery's ``parked`` end
    commit together.
    """
    with transaction.atomic():
        _lock_stream(handler, recorded.stream_id)
        held_by = blocker(handler, recorded)
        if held_by is None:
            return False
        park(handler, recorded, held_by)
        Delivery.objects.filter(pk=delivery_id).update(
            status=Delivery.Status.PARKED,
            finishes=F("finishes") + 1,
            reconcile_at=None,
            updated_at=timezone.now(),
        )
    return True


def park(handler: str, recorded: RecordedEvent, blocked_by: DeadLetter) -> ParkedMessage:
    """Hold ``recorded`` back from ``handler`` until ``blocked_by`` is closed."""
    parked, _ = ParkedMessage.objects.update_or_create(
        handler=handler,
        event_id=recorded.event_id,
        defaults={
            "stream_id": recorded.stream_id,
            "version": recorded.version,
            "blocked_by": blocked_by,
            "status": ParkedMessage.Status.PENDING,
            "reason": f"blocked by dead letter {blocked_by.pk}",
            "released_at": None,
        },
    )
    return parked


def has_parked(handler: str, stream_id: uuid.UUID | str) -> bool:
    return ParkedMessage.objects.filter(
        handler=handler, stream_id=stream_id, status="pending"
    ).exists()


def release_next(handler: str, stream_id: Any) -> ParkedMessage | None:
    """Queue the earliest parked event of the stream for ``handler`` again, if nothing
    blocks it; in the caller's transaction, under the stream's lock.

    The release is a ledger ``queued`` row written with the parked row's change, so a
    broker error can't leave an event marked released that was never sent. Each release
    is followed, when that event succeeds, by the next one: a stream's parked events
    reach the handler one at a time, in version order.
    """
    if stream_id is None:
        return None
    with transaction.atomic():
        _lock_stream(handler, stream_id)
        parked = (
            ParkedMessage.objects.select_for_update()
            .filter(handler=handler, stream_id=stream_id, status="pending")
            .order_by("version")
            .first()
        )
        if parked is None or _blocked(handler, stream_id, parked.version):
            return None
        parked.status = ParkedMessage.Status.RELEASED
        parked.released_at = timezone.now()
        parked.save(update_fields=["status", "released_at"])
        ledger.requeue(parked.handler, parked.event_id)
    return parked


def _blocked(handler: str, stream_id: Any, version: int) -> bool:
    return DeadLetter.objects.filter(
        handler=handler, stream_id=stream_id, event_version__lt=version, status__in=OPEN
    ).exists()


def sweep(*, limit: int = 100) -> int:
    """Release the first parked event of every stream nothing holds back any more; return
    how many were released (a stream frozen by a lost release moves again)."""
    streams = (
        ParkedMessage.objects.filter(status="pending")
        .exclude(blocked_by__status__in=OPEN)
        .order_by()
        .values_list("handler", "stream_id")
        .distinct()[:limit]
    )
    released = 0
    for handler, stream_id in list(streams):
        if release_next(handler, uuid.UUID(str(stream_id))) is not None:
            released += 1
    return released
