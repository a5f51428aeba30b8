"""The life of one delivery: run one handler on one event, exactly once in effect.

Messages arrive at least once (``acks_late`` + ``reject_on_worker_lost``); the handler's
writes and the processed mark ``(handler, event_id)`` commit in one transaction, so a
redelivery finds the mark and does nothing. Every failure ends in a retry through Celery's
own ``retry`` (the countdown chosen by the kind's policy) or in a dead letter.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent, decode
from apps.eventstore.store import to_recorded
from apps.eventstore.subscriptions import Subscription, subscription
from apps.resilience.breakers import retry_delay, write_pending_transitions
from apps.resilience.classify import Classification, classify
from apps.resilience.models import Attempt, DeadLetter, Delivery, ProcessedMessage
from apps.resilience.policies import policy_for
from apps.resilience.services import dead_letters, parking
from apps.resilience.services.escalation import escalate, report_to_sentry
from apps.resilience.taxonomy import (
    ConfigurationError,
    Corruption,
    ErrorKind,
    NotFound,
    WorkerLostRepeatedly,
)

logger = logging.getLogger(__name__)
Status = Delivery.Status
# How long to wait before re-running a delivery that failed outside its handler
# (the database or cache itself unreachable): no attempt is spent.
INFRASTRUCTURE_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Started:
    """The delivery row as the current run found it."""

    id: int
    starts: int
    finishes: int
    attempts: int
    troubled: bool = False  # an ordered handler's stream has an open dead letter or parking

    @property
    def worker_losses(self) -> int:
        return self.starts - 1 - self.finishes


def run(task: Task, handler: str, event_id: str, dead_letter_id: int | None = None) -> str:
    """Deliver event ``event_id`` to ``handler``; return the outcome's name.

    Anything that fails outside the handler itself (the database unreachable while the
    run is being recorded) re-queues the message instead of losing it.
    """
    try:
        return _run(task, handler, event_id, dead_letter_id)
    except (Retry, Reject):
        raise
    except Exception as exc:
        logger.exception(
            "delivery of %s to %s failed outside the handler; re-queued", event_id, handler
        )
        _retry(task, exc, INFRASTRUCTURE_RETRY_SECONDS)
        raise AssertionError("unreachable") from exc


def _run(task: Task, handler: str, event_id: str, dead_letter_id: int | None) -> str:
    """1. Resolve the handler and decode the event: a poison message is dead-lettered at once.
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
        row = Event.objects.get(event_id=uuid.UUID(str(event_id)))
    except (ValueError, TypeError, AttributeError):
        return _poison(
            handler, Corruption(f"message names an invalid event id {event_id!r}"), event_id
        )
    except Event.DoesNotExist:
        return _poison(handler, NotFound(f"event {event_id} does not exist"), event_id)
    try:
        recorded = _decode(row, dead_letter_id)
    except Exception as exc:
        return _poison(handler, exc, event_id, event=row)

    started = _start(handler, row.event_id, recorded.stream_id if sub.ordered else None)
    if started.worker_losses >= settings.RESILIENCE_WORKER_LOST_LIMIT:
        lost = WorkerLostRepeatedly(
            f"worker lost repeatedly: {started.worker_losses} runs died with their worker"
        )
        return _dead_letter(sub, row, started, lost, classify(lost), started.attempts or 1)
    if _done_fast(handler, row.event_id):
        _finish(started, Status.SUCCEEDED)
        return "duplicate"
    troubled = started.troubled
    if troubled and (blocker := parking.blocker(handler, recorded)) is not None:
        parking.park(handler, recorded, blocker)
        _finish(started, Status.PARKED)
        return "parked"
    try:
        fresh = _run_handler(sub, recorded, started)
    except Exception as exc:
        return _on_failure(task, sub, row, started, exc)
    _on_success(sub, recorded, dead_letter_id, troubled)
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


def _start(handler: str, event_id: uuid.UUID, ordered_stream: uuid.UUID | None) -> Started:
    """Count one more start of the (handler, event) delivery in its own committed statement.

    For an ordered handler (``ordered_stream`` given) the same statement tells whether the
    stream is in trouble (an open dead letter or a parked event), saving a round trip.
    """
    now = timezone.now()
    field = Delivery._meta.get_field("event_id")
    params = [handler, field.get_db_prep_value(event_id, connection), now, now]
    trouble, trouble_params = (
        parking.trouble_sql(handler, ordered_stream) if ordered_stream else ("false", [])
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO resilience_delivery
                (handler, event_id, status, starts, finishes, attempts, last_kind, last_error,
                 created_at, updated_at)
            VALUES (%s, %s, 'running', 1, 0, 0, '', '', %s, %s)
            ON CONFLICT (handler, event_id) DO UPDATE
                SET starts = resilience_delivery.starts + 1, status = 'running',
                    updated_at = EXCLUDED.updated_at
            RETURNING id, starts, finishes, attempts, {trouble}
            """,
            params + trouble_params,
        )
        return Started(*cursor.fetchone())


def _finish(started: Started, status: str, **fields: Any) -> None:
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
    """Run the handler, insert its processed mark and mark the delivery succeeded, all in
    one transaction; return False if an earlier delivery had already done the work."""
    try:
        with transaction.atomic():
            # False: a concurrent or earlier delivery already committed its effect.
            fresh = _mark_processed(sub.name, recorded.event_id)
            if fresh:
                sub.func(recorded)
            _finish(started, Status.SUCCEEDED, last_error="")
    finally:
        write_pending_transitions()  # breaker transitions outlive the handler's rollback
    return fresh


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


def _on_success(
    sub: Subscription, recorded: RecordedEvent, dead_letter_id: int | None, troubled: bool
) -> None:
    logger.info("delivered %s #%s to %s", recorded.type, recorded.position, sub.name)
    try:
        cache.set(
            _processed_key(sub.name, recorded.event_id),
            1,
            settings.RESILIENCE_PROCESSED_CACHE_SECONDS,
        )
    except Exception:
        logger.warning("could not remember a processed mark in the cache", exc_info=True)
    if dead_letter_id is not None:
        dead_letters.retry_succeeded(dead_letter_id)
    if troubled and parking.has_parked(sub.name, recorded.stream_id):
        parking.release_next(sub.name, recorded.stream_id)


def _on_failure(task: Task, sub: Subscription, row: Event, started: Started, exc: Exception) -> str:
    """Follow the policy of the failure's kind: retry or defer through Celery, or dead-letter."""
    classification = classify(exc)
    _call_error_hook(sub, exc, row)
    policy = policy_for(classification.kind, sub.options.get("retry"))
    spent = started.attempts + (1 if policy.spends_attempts else 0)
    if not policy.retries(spent):
        return _dead_letter(sub, row, started, exc, classification, max(spent, 1))
    if classification.kind is ErrorKind.UNAVAILABLE:
        countdown = ceiling = retry_delay(classification.retry_at, policy.countdown(1))
    else:
        countdown = policy.countdown(spent, classification.retry_after)
        ceiling = policy.ceiling(spent, classification.retry_after)
    outcome = Attempt.Outcome.RETRY if policy.spends_attempts else Attempt.Outcome.DEFER
    _record_attempt(started, spent, exc, classification, outcome, countdown, ceiling)
    _finish(
        started,
        Status.RETRYING if policy.spends_attempts else Status.DEFERRED,
        attempts=spent,
        last_kind=classification.kind,
        last_error=_describe(exc),
        next_attempt_at=timezone.now() + timedelta(seconds=countdown),
    )
    _retry(task, exc, countdown)
    raise AssertionError("unreachable")


def _retry(task: Task, exc: Exception, countdown: float) -> None:
    """Re-publish the message after ``countdown`` seconds; if the broker can't take it,
    re-queue this one rather than drop it (Celery's own retry rejects without requeue)."""
    try:
        raise task.retry(exc=exc, countdown=countdown)
    except Reject as rejected:
        raise Reject(rejected.reason, requeue=True) from exc


def _dead_letter(
    sub: Subscription,
    row: Event,
    started: Started,
    exc: BaseException,
    classification: Classification,
    attempts: int,
) -> str:
    _record_attempt(started, attempts, exc, classification, Attempt.Outcome.DEAD_LETTER)
    letter = dead_letters.record(
        handler=sub.name, exc=exc, classification=classification, attempts=attempts, event=row
    )
    _finish(
        started,
        Status.DEAD_LETTERED,
        attempts=attempts,
        last_kind=classification.kind,
        last_error=_describe(exc),
        next_attempt_at=None,
    )
    _tell_people(exc, letter)
    _call_hook(sub, "on_dead_letter", letter, row)
    return "dead_lettered"


def _poison(handler: str, exc: Exception, event_id: Any, event: Event | None = None) -> str:
    """Dead-letter a message that can never be processed; it is never retried."""
    classification = classify(exc)
    letter = dead_letters.record(
        handler=handler,
        exc=exc,
        classification=classification,
        attempts=1,
        event=event,
        event_id=_uuid_or_none(event_id),
        raw_payload=None if event else {"event_id": str(event_id)},
    )
    _tell_people(exc, letter)
    return "dead_lettered"


def _tell_people(exc: BaseException, letter: DeadLetter) -> None:
    logger.error(
        "dead letter #%s: %s %s in %s", letter.pk, letter.kind, _describe(exc), letter.handler
    )
    report_to_sentry(exc, letter)
    escalate(letter)


def _record_attempt(
    started: Started,
    number: int,
    exc: BaseException,
    classification: Classification,
    outcome: str,
    countdown: float | None = None,
    ceiling: float | None = None,
) -> None:
    Attempt.objects.create(
        delivery_id=started.id,
        number=number,
        kind=classification.kind,
        exception_type=type(exc).__name__,
        message=str(exc)[:2000],
        outcome=outcome,
        countdown=countdown,
        ceiling=ceiling,
    )


def _call_error_hook(sub: Subscription, exc: Exception, row: Event) -> None:
    _call_hook(sub, "handle_error", exc, row)


def _call_hook(sub: Subscription, name: str, *args: Any) -> None:
    """Call the handler's ``handle_error`` or ``on_dead_letter`` hook; whatever it raises is
    logged, never propagated: a hook can't stop the pipeline."""
    hook = sub.options.get(name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        logger.exception("%s of %s raised; the pipeline goes on", name, sub.name)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
