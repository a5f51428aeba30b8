"""Retention: prune the rows that have reached an end and outlived their retention age.

What goes, each after its setting's age (``*_RETENTION_DAYS``):

- published outbox rows (``OUTBOX_RETENTION_DAYS`` after publishing);
- processed marks (``PROCESSED_MARK_RETENTION_DAYS``; the settings refuse an age shorter
  than the longest possible redelivery, since the mark is what makes a copy a no-op);
- succeeded deliveries, with their attempts (``DELIVERY_RETENTION_DAYS`` after the end);
- resolved or discarded dead letters, with their actions and released parked messages
  (``DEAD_LETTER_RETENTION_DAYS`` after resolution), unless an escalation of theirs is
  still unacknowledged or a message is still parked behind them;
- idempotency keys past their replay window (``apps.api.idempotency.WINDOW``).

Nothing queued, running, waiting, open or pending matches a rule. Each statement deletes
at most ``RETENTION_BATCH_SIZE`` rows, oldest first, and one run at most
``RETENTION_MAX_ROWS_PER_RUN`` per rule: the next run goes on where it stopped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from apps.api.idempotency import WINDOW
from apps.eventstore.models import OutboxMessage
from apps.resilience.models import (
    DeadLetter,
    Delivery,
    Escalation,
    IdempotencyRecord,
    ParkedMessage,
    ProcessedMessage,
)

Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class Rule:
    """One kind of row to prune: its retention age, and the rows older than ``cutoff``
    it may delete."""

    age: Callable[[], timedelta]
    candidates: Callable[[datetime], QuerySet]


def _days(setting: str) -> Callable[[], timedelta]:
    return lambda: timedelta(days=getattr(settings, setting))


def _outbox(cutoff: datetime) -> QuerySet:
    return OutboxMessage.objects.filter(published_at__lt=cutoff)


def _processed_marks(cutoff: datetime) -> QuerySet:
    return ProcessedMessage.objects.filter(processed_at__lt=cutoff)


def _deliveries(cutoff: datetime) -> QuerySet:
    return Delivery.objects.filter(status=Delivery.Status.SUCCEEDED, updated_at__lt=cutoff)


def _dead_letters(cutoff: datetime) -> QuerySet:
    unacknowledged = Escalation.objects.filter(
        dead_letter=OuterRef("pk"), acknowledged_at__isnull=True
    )
    still_parked = ParkedMessage.objects.filter(
        blocked_by=OuterRef("pk"), status=ParkedMessage.Status.PENDING
    )
    return DeadLetter.objects.filter(
        status__in=[DeadLetter.Status.RESOLVED, DeadLetter.Status.DISCARDED],
        resolved_at__lt=cutoff,
    ).filter(~Exists(unacknowledged), ~Exists(still_parked))


def _idempotency_keys(cutoff: datetime) -> QuerySet:
    return IdempotencyRecord.objects.filter(created_at__lt=cutoff)


RULES = (
    Rule(_days("OUTBOX_RETENTION_DAYS"), _outbox),
    Rule(_days("PROCESSED_MARK_RETENTION_DAYS"), _processed_marks),
    Rule(_days("DELIVERY_RETENTION_DAYS"), _deliveries),
    Rule(_days("DEAD_LETTER_RETENTION_DAYS"), _dead_letters),
    Rule(lambda: WINDOW, _idempotency_keys),
)


def prune(*, dry_run: bool = False, progress: Progress | None = None) -> dict[str, int]:
    """Prune every rule's rows; return how many rows went per table (``app.Model``), the
    cascaded ones (attempts, dead-letter actions) included. With ``dry_run``, delete
    nothing and return how many rows of each rule's table would go in this run.

    ``progress(table, rows)`` is called after each batch (the dry run: once per rule).
    """
    now = timezone.now()
    counts: Counter[str] = Counter()
    for rule in RULES:
        candidates = rule.candidates(now - rule.age())
        if dry_run:
            found = _count(candidates)
            counts[candidates.model._meta.label] += found
            if progress:
                progress(candidates.model._meta.label, found)
            continue
        counts.update(_prune_rule(candidates, progress))
    return dict(counts)


def _count(candidates: QuerySet) -> int:
    cap = settings.RETENTION_MAX_ROWS_PER_RUN
    return candidates.order_by()[:cap].count()


def _prune_rule(candidates: QuerySet, progress: Progress | None) -> Counter[str]:
    """Delete the rule's rows batch by batch until none is left or the run's cap is hit."""
    counts: Counter[str] = Counter()
    label = candidates.model._meta.label
    left = settings.RETENTION_MAX_ROWS_PER_RUN
    while left > 0:
        deleted = _delete_batch(candidates, min(settings.RETENTION_BATCH_SIZE, left))
        if not deleted:
            break
        counts.update(deleted)
        left -= deleted[label]
        if progress:
            progress(label, deleted[label])
    return counts


def _delete_batch(candidates: QuerySet, size: int) -> Counter[str]:
    """1. Lock up to ``size`` of the oldest candidates, skipping rows another transaction
       holds (a delivery being re-run, a letter being retried): they stay for a later run.
    2. Delete them and what hangs on them, in the same transaction, so no row can leave
       the rule's conditions between the two.
    """
    with transaction.atomic():
        ids = list(
            candidates.order_by("pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:size]
        )
        if not ids:
            return Counter()
        deleted: Counter[str] = Counter()
        if candidates.model is DeadLetter:  # parked rows protect their letter
            _, released = ParkedMessage.objects.filter(blocked_by__in=ids).delete()
            deleted.update(released)
        _, rows = candidates.model.objects.filter(pk__in=ids).delete()
        deleted.update(rows)
        return +deleted
