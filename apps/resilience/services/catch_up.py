"""Catch a handler up: record in the ledger the deliveries it never got.

The relay records a ``queued`` delivery only for the handlers subscribed when it publishes
an event, so a handler added later has no pair for the events stored before it existed.
``catch_up`` walks those events in log order and records the missing pairs through
``ledger.expect``; the reconciler then sends them when they fall due (or ``send_now``
sends them at once).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Q
from kombu.exceptions import KombuError

from apps.eventstore import relay, store
from apps.eventstore.models import Event
from apps.resilience.models import Delivery, ProcessedMessage
from apps.resilience.services import ledger

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """One batch of the handler's events: how many were looked at, the last position looked
    at, and the ids of those with no delivery (nor processed mark) for the handler."""

    scanned: int
    last_position: int
    missing: list[uuid.UUID]


@dataclass(frozen=True)
class CatchUpReport:
    scanned: int
    queued: int
    sent: int
    send_failures: int


def events_to_scan(types: Collection[str], *, after_position: int = 0) -> int:
    """Return how many stored events of ``types`` come after ``after_position``."""
    return Event.objects.filter(type__in=list(types), position__gt=after_position).count()


def missing_batches(
    handler: str, types: Collection[str], *, after_position: int = 0, batch: int = 1000
) -> Iterator[Batch]:
    """Yield the events of ``types`` after ``after_position``, ``batch`` at a time in
    position order, with the ids of those ``handler`` has neither a delivery nor a
    processed mark for (a mark without a row: it ran before the ledger kept every pair)."""
    known = Q(Exists(Delivery.objects.filter(handler=handler, event_id=OuterRef("event_id"))))
    known |= Q(
        Exists(ProcessedMessage.objects.filter(handler=handler, event_id=OuterRef("event_id")))
    )
    # Up to where the log is complete now; what commits later the relay delivers to every
    # subscriber of the moment, this handler included.
    rows = (
        Event.objects.filter(type__in=list(types), position__lte=store.committed_position())
        .annotate(known=known)
        .order_by("position")
    )
    cursor = after_position
    while page := list(
        rows.filter(position__gt=cursor).values_list("position", "event_id", "known")[:batch]
    ):
        cursor = page[-1][0]
        missing = [event_id for _position, event_id, is_known in page if not is_known]
        yield Batch(scanned=len(page), last_position=cursor, missing=missing)


def send_now(handler: str, event_ids: list[uuid.UUID]) -> int:
    """Send one message per pair now and return how many sends failed (their rows stay
    queued, so the reconciler sends them when they fall due)."""
    failures = 0
    for event_id in event_ids:
        try:
            relay.send_delivery(handler, event_id)
        except (KombuError, OSError):  # the row is queued: the reconciler will send it
            failures += 1
    if failures:
        logger.warning(
            "%d of %d sends to %s failed; left to the reconciler", failures, len(event_ids), handler
        )
    return failures


def catch_up(
    handler: str,
    types: Collection[str],
    *,
    after_position: int = 0,
    batch: int = 1000,
    dry_run: bool = False,
    send: bool = False,
    progress: Callable[[int], object] = lambda scanned: None,
) -> CatchUpReport:
    """Record a ``queued`` delivery for every stored event of ``types`` that ``handler``
    has no delivery for, and return what was done (``queued`` counts what would be queued
    on a ``dry_run``, which writes and sends nothing).

    1. Read the events ``batch`` at a time in position order, each with whether the
       handler already has a row for it (one query per batch).
    2. Record the missing pairs with ``ledger.expect`` (each batch commits on its own, so
       an interrupted run keeps its progress and a re-run skips it). A pair the relay or a
       worker recorded meanwhile keeps its row: ``expect`` ignores conflicts.
    3. With ``send``, send the batch's messages after it committed.
    """
    scanned = queued = sent = failures = 0
    for page in missing_batches(handler, types, after_position=after_position, batch=batch):
        if page.missing and not dry_run:
            ledger.expect((handler, event_id) for event_id in page.missing)
            if send:
                page_failures = send_now(handler, page.missing)
                failures += page_failures
                sent += len(page.missing) - page_failures
        scanned += page.scanned
        queued += len(page.missing)
        progress(page.scanned)
    return CatchUpReport(scanned=scanned, queued=queued, sent=sent, send_failures=failures)
