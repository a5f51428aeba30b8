"""The life of one delivery: run one handler on one event, exactly once in effect.

Messages arrive at least once (``acks_late`` + ``reject_on_worker_lost``); the handler's
writes and the processed mark ``(handler, event_id)`` commit in one transaction, so a
redelivery finds the mark and does nothing. Every failure ends in a retry through Celery's
own ``retry`` (the countdown chosen by the kind's policy) or in a dead letter.

This module is the entry point (``run``, ``timed_out``) and the order of a run's steps;
the delivery row's bookkeeping lives in ``apps.resilience.deliveries`` and what a failure
leads to (retry, defer, dead letter, poison) in ``apps.resilience.outcomes``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from celery import Task
from celery.exceptions import Reject, Retry
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.eventstore.exceptions import NewerSchemaVersion
from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent, decode
from apps.eventstore.store import to_recorded
from apps.eventstore.subscriptions import subscription
from apps.resilience import log_context
from apps.resilience.classify import classify
from apps.resilience.deliveries import (
    Started,
    _complete,
    _done_fast,
    _Progress,
    _remember,
    _run_handler,
    _start,
)
from apps.resilience.models import DeadLetter, Delivery
from apps.resilience.outcomes import _dead_letter, _on_failure, _poison, _retry, _retry_overrides
from apps.resilience.policies import policy_for
from apps.resilience.services import parking
from apps.resilience.taxonomy import (
    ConfigurationError,
    Corruption,
    DependencyTimeout,
    ErrorKind,
    NotFound,
    Unavailable,
    WorkerLostRepeatedly,
)

logger = logging.getLogger(__name__)
# How long to wait before re-running a delivery that failed outside its handler
# (the database or cache itself unreachable): no attempt is spent.
INFRASTRUCTURE_RETRY_SECONDS = 5.0


def run(
    task: Task | None,
    handler: str,
    event_id: str,
    dead_letter_id: int | None = None,
    forgive: int = 0,
) -> str:
    """Deliver event ``event_id`` to ``handler``; return the outcome's name.

    Anything that fails outside the handler itself (the database unreachable while the
    run is being recorded) re-queues the message instead of losing it. Such a run did not
    die with its worker: the re-queued message says so (``forgive``), so the next start
    does not count it as a worker loss.
    """
    progress = _Progress()
    with log_context.delivery(handler, event_id):
        try:
            return _run(task, handler, event_id, dead_letter_id, forgive, progress)
        except (Retry, Reject):
            raise
        except Exception as exc:
            logger.exception(
                "delivery of %s to %s failed outside the handler; re-queued", event_id, handler
            )
            _retry(task, handler, event_id, exc, INFRASTRUCTURE_RETRY_SECONDS, forgive=progress)
            raise AssertionError("unreachable") from exc


def _run(
    task: Task | None,
    handler: str,
    event_id: str,
    dead_letter_id: int | None,
    forgive: int,
    progress: _Progress,
) -> str:
    """1. Resolve the handler (and check its retry policies) and decode the event: a poison
       message is dead-lettered at once; an event of a schema version this process doesn't
       know yet is deferred.
    2. Count the start: N earlier runs that never finished killed their worker: dead-letter.
    3. Skip what the Redis fast path or the processed mark says is done.
    4. Park an ordered handler's event behind an open dead letter of its stream.
    5. Run the handler with the processed mark in one transaction; on failure, follow the
       kind's policy: retry, defer, or dead-letter.
    """
    try:
        sub = subscription(handler)
    except KeyError:
        return _poison(
            handler, ConfigurationError(f"no handler is registered as {handler!r}"), event_id
        )
    try:
        _retry_overrides(sub)
    except ConfigurationError as exc:
        return _poison(handler, exc, event_id)
    try:
        row = Event.objects.get(event_id=uuid.UUID(str(event_id)))
    except (ValueError, TypeError, AttributeError):
        return _poison(
            handler, Corruption(f"message names an invalid event id {event_id!r}"), event_id
        )
    except Event.DoesNotExist:
        return _poison(handler, NotFound(f"event {event_id} does not exist"), event_id)
    log_context.set_correlation((row.metadata or {}).get("correlation_id", "-"))
    started = _start(sub, row, forgive, dead_letter_id)
    if started.stray:
        logger.info("ignored a copy of the message of dead-lettered %s", sub.name)
        return "ignored"
    progress.open_start = True
    try:
        recorded = _decode(row, started.replay_of)
    except NewerSchemaVersion as exc:
        return _on_failure(task, sub, row, None, started, _not_yet_known(exc), progress)
    except Exception as exc:
        progress.open_start = False
        return _poison(handler, exc, event_id, event=row, started=started)
    if started.worker_losses >= settings.RESILIENCE_WORKER_LOST_LIMIT:
        lost = WorkerLostRepeatedly(
            f"worker lost repeatedly: {started.worker_losses} runs died with their worker"
        )
        return _dead_letter(
            sub, row, recorded, started, lost, classify(lost), started.attempts or 1
        )
    if _done_fast(handler, row.event_id):
        with transaction.atomic():
            _complete(sub, recorded, started)
        return "duplicate"
    if started.troubled and parking.park_if_blocked(handler, recorded, started.id):
        return "parked"
    try:
        fresh = _run_handler(sub, recorded, started)
    except Exception as exc:
        return _on_failure(task, sub, row, recorded, started, exc, progress)
    progress.open_start = False
    _remember(sub, recorded)
    return "processed" if fresh else "duplicate"


def _decode(row: Event, dead_letter_id: int | None) -> RecordedEvent:
    recorded = to_recorded(row)
    if dead_letter_id is None:
        return recorded
    edited = (
        DeadLetter.objects.filter(pk=dead_letter_id)
        .values_list("edited_payload", flat=True)
        .first()
    )
    if edited is None:
        return recorded
    return recorded.model_copy(update={"payload": decode(row.type, row.schema_version, edited)})


def _recorded_or_none(row: Event, dead_letter_id: int | None) -> RecordedEvent | None:
    """Return the event as its handler saw it, or None if this process can't decode it."""
    try:
        return _decode(row, dead_letter_id)
    except Exception:
        logger.warning("event %s can't be decoded; its hooks are not called", row.event_id)
        return None


def _not_yet_known(exc: NewerSchemaVersion) -> Unavailable:
    """Defer an event a newer process wrote until a process that knows its version runs it
    (a rolling deploy); no attempt is spent."""
    wait = policy_for(ErrorKind.UNAVAILABLE).countdown(1)
    return Unavailable(
        f"{exc}; waiting for a worker that knows it",
        retry_at=timezone.now() + timedelta(seconds=wait),
    )


def timed_out(handler: str, event_id: str, limit: float | None) -> str:
    """Count a run its hard time limit killed as a timeout attempt of the pair; return the
    outcome. Celery acknowledges such a message, so the ledger re-sends it (or the pair is
    dead-lettered with its event when the timeout policy is spent)."""
    with log_context.delivery(handler, event_id):
        try:
            sub = subscription(handler)
            row = Event.objects.get(event_id=uuid.UUID(str(event_id)))
            current = Delivery.objects.get(handler=handler, event_id=row.event_id)
        except (KeyError, ValueError, Event.DoesNotExist, Delivery.DoesNotExist):
            logger.error("a run of %s on %s was killed by its time limit", handler, event_id)
            return "unknown"
        started = Started(
            current.pk,
            current.starts,
            current.finishes,
            current.attempts,
            replay_of=current.replay_of_id,
            resends=current.resends,
        )
        exc = DependencyTimeout(
            f"the handler ran past its hard time limit ({limit} s) and was killed"
        )
        recorded = _recorded_or_none(row, started.replay_of)
        return _on_failure(None, sub, row, recorded, started, exc, _Progress(open_start=True))
