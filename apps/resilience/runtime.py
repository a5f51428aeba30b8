"""The life of one delivery: run one handler on one event, exactly once in effect.

Messages arrive at least once (``acks_late`` + ``reject_on_worker_lost``); the handler's
writes and the processed mark ``(handler, event_id)`` commit in one transaction, so a
redelivery finds the mark and does nothing. Every failure ends in a retry through Celery's
own ``retry`` (the countdown chosen by the kind's policy) or in a dead letter.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.eventstore import relay
from apps.eventstore.exceptions import NewerSchemaVersion
from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent, decode
from apps.eventstore.store import to_recorded
from apps.eventstore.subscriptions import Subscription, subscription
from apps.resilience import log_context
from apps.resilience.breakers import retry_delay, write_pending_transitions
from apps.resilience.classify import Classification, classify
from apps.resilience.hooks import call_dead_letter_hook, call_error_hook
from apps.resilience.models import Attempt, DeadLetter, Delivery, ProcessedMessage
from apps.resilience.policies import RetryPolicy, policy_for
from apps.resilience.services import dead_letters, ledger, parking
from apps.resilience.services.escalation import escalate, report_to_sentry
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
    replay_of: int | None = None  # the dead letter this run retries
    stray: bool = False  # a copy of a message for a dead-lettered pair: ignored

    @property
    def worker_losses(self) -> int:
        return self.starts - 1 - self.finishes


@dataclass
class _Progress:
    """Whether this run has a start recorded that no finish has matched yet."""

    open_start: bool = False


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
                status = 'dead_lettered'
            """,
            params + trouble_params,
        )
        pk, starts, finishes, attempts, troubled, replay_of, is_stray = cursor.fetchone()
        started = Started(pk, starts, finishes, attempts, troubled, replay_of, stray=is_stray)
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
        )
        exc = DependencyTimeout(
            f"the handler ran past its hard time limit ({limit} s) and was killed"
        )
        recorded = _recorded_or_none(row, started.replay_of)
        return _on_failure(None, sub, row, recorded, started, exc, _Progress(open_start=True))


def _on_failure(
    task: Task | None,
    sub: Subscription,
    row: Event,
    recorded: RecordedEvent | None,
    started: Started,
    exc: Exception,
    progress: _Progress,
) -> str:
    """Follow the policy of the failure's kind: retry or defer, or dead-letter.

    A wait short enough for the broker goes out as Celery's own retry with a countdown
    (the ledger re-sends it if that message is lost); a longer one waits in the ledger,
    which sends it when due, so no broker holds a message past its visibility timeout.
    The hooks get ``recorded``, the event as the handler saw it (None: not decodable here).
    """
    classification = classify(exc)
    call_error_hook(sub, exc, recorded)
    policy = policy_for(classification.kind, _retry_overrides(sub))
    spent = started.attempts + (1 if policy.spends_attempts else 0)
    if not policy.retries(spent):
        progress.open_start = False
        return _dead_letter(sub, row, recorded, started, exc, classification, max(spent, 1))
    if classification.kind is ErrorKind.UNAVAILABLE:
        countdown = ceiling = retry_delay(classification.retry_at, policy.countdown(1))
    else:
        countdown = policy.countdown(spent, classification.retry_after)
        ceiling = policy.ceiling(spent, classification.retry_after)
    outcome = Attempt.Outcome.RETRY if policy.spends_attempts else Attempt.Outcome.DEFER
    _record_attempt(started, spent, exc, classification, outcome, countdown, ceiling)
    next_attempt_at = timezone.now() + timedelta(seconds=countdown)
    _finish(
        started,
        Status.RETRYING if policy.spends_attempts else Status.DEFERRED,
        attempts=spent,
        last_kind=classification.kind,
        last_error=_describe(exc),
        next_attempt_at=next_attempt_at,
        reconcile_at=ledger.wait_deadline(next_attempt_at, countdown),
    )
    progress.open_start = False
    if not ledger.waits_in_broker(countdown):
        logger.info("%s waits in the ledger until %s", sub.name, next_attempt_at.isoformat())
        return "waiting"
    _retry(task, sub.name, str(row.event_id), exc, countdown)
    return "retrying"


def _retry(
    task: Task | None,
    handler: str,
    event_id: str,
    exc: Exception,
    countdown: float,
    *,
    forgive: _Progress | None = None,
) -> None:
    """Re-publish the message after ``countdown`` seconds; if the broker can't take it,
    re-queue this one rather than drop it (Celery's own retry rejects without requeue).

    Outside a task (a time-limit kill seen by the worker's main process) the message is
    sent afresh; if that fails the ledger sends it when it is due.
    """
    kwargs = {"forgive": 1} if forgive is not None and forgive.open_start else {}
    if task is None:
        try:
            relay.send_delivery(handler, event_id, countdown=countdown)
        except Exception:
            logger.warning("retry of %s not sent; the reconciler will send it", event_id)
        return
    try:
        raise task.retry(exc=exc, countdown=countdown, kwargs=kwargs)
    except Reject as rejected:
        # celery-types omits Reject's ``reason`` attribute (set in its __init__).
        raise Reject(rejected.reason, requeue=True) from exc  # type: ignore[attr-defined]


def _dead_letter(
    sub: Subscription,
    row: Event,
    recorded: RecordedEvent | None,
    started: Started,
    exc: BaseException,
    classification: Classification,
    attempts: int,
) -> str:
    with transaction.atomic():  # the letter and the delivery's end, or neither
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
    call_dead_letter_hook(sub, letter, recorded)
    return "dead_lettered"


def _poison(
    handler: str,
    exc: Exception,
    event_id: Any,
    event: Event | None = None,
    started: Started | None = None,
) -> str:
    """Dead-letter a message that can never be processed; it is never retried."""
    classification = classify(exc)
    with transaction.atomic():
        letter = dead_letters.record(
            handler=handler,
            exc=exc,
            classification=classification,
            attempts=1,
            event=event,
            event_id=_uuid_or_none(event_id),
            raw_payload=None if event else {"event_id": str(event_id)},
        )
        if started is not None:
            _finish(
                started,
                Status.DEAD_LETTERED,
                attempts=1,
                last_kind=classification.kind,
                last_error=_describe(exc),
                next_attempt_at=None,
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


def _retry_overrides(sub: Subscription) -> dict[ErrorKind, RetryPolicy]:
    """Return the handler's ``retry`` policies by kind; ``ConfigurationError`` when a key
    is no error kind or a value no ``RetryPolicy`` (the event store can't check them)."""
    overrides: dict[ErrorKind, RetryPolicy] = {}
    for kind, policy in sub.retry.items():
        if kind not in ErrorKind.values or not isinstance(policy, RetryPolicy):
            raise ConfigurationError(
                f"{sub.name}: retry={{{kind!r}: {policy!r}}} is not an error kind and a RetryPolicy"
            )
        overrides[ErrorKind(kind)] = policy
    return overrides


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
