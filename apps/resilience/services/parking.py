"""Ordered handlers: later events of a stream wait behind its open dead letter, then go in order."""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from apps.eventstore import relay
from apps.eventstore.registry import RecordedEvent
from apps.resilience.models import DeadLetter, ParkedMessage

OPEN = (DeadLetter.Status.PENDING, DeadLetter.Status.RETRYING)


def trouble_sql(handler: str, stream_id: object) -> tuple[str, list[object]]:
    """Return an SQL boolean expression (and its parameters): does the stream have an open
    dead letter or a parked event for ``handler``?

    The runtime evaluates it in the statement that records a delivery's start, so the
    common path pays no extra round trip; only a stream in trouble needs ``blocker`` and,
    after a success, a look for parked events to release."""
    prep = DeadLetter._meta.get_field("stream_id").get_db_prep_value(stream_id, connection)
    sql = (
        "(EXISTS (SELECT 1 FROM resilience_deadletter WHERE handler = %s AND stream_id = %s"
        " AND status IN ('pending', 'retrying'))"
        " OR EXISTS (SELECT 1 FROM resilience_parkedmessage"
        " WHERE handler = %s AND stream_id = %s AND status = 'pending'))"
    )
    return sql, [handler, prep, handler, prep]


def blocker(handler: str, recorded: RecordedEvent) -> DeadLetter | None:
    """Return the dead letter that holds ``recorded`` back from ``handler``, if any.

    An event is held back by an open dead letter of an earlier version of its stream, or by
    an earlier version that is itself still parked.
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


def has_parked(handler: str, stream_id: object) -> bool:
    return ParkedMessage.objects.filter(
        handler=handler, stream_id=stream_id, status="pending"
    ).exists()


def release_next(handler: str, stream_id: object) -> ParkedMessage | None:
    """Send the earliest parked event of the stream back to ``handler``, if nothing blocks it.

    Each release is followed, when that event succeeds, by the next one, so a stream's
    parked events reach the handler one at a time in version order.
    """
    if stream_id is None:
        return None
    with transaction.atomic():
        parked = (
            ParkedMessage.objects.select_for_update(skip_locked=True)
            .filter(handler=handler, stream_id=stream_id, status="pending")
            .order_by("version")
            .first()
        )
        if (
            parked is None
            or DeadLetter.objects.filter(
                handler=handler,
                stream_id=stream_id,
                event_version__lt=parked.version,
                status__in=OPEN,
            ).exists()
        ):
            return None
        parked.status = ParkedMessage.Status.RELEASED
        parked.released_at = timezone.now()
        parked.save(update_fields=["status", "released_at"])
        transaction.on_commit(lambda: relay.send_delivery(parked.handler, parked.event_id))
    return parked
