"""What becomes of a failed delivery: the failure policy and its outcomes.

Following the kind's policy a failure is retried (Celery's own ``retry``, or a wait in
the ledger) or deferred, or the delivery is dead-lettered; a message that can never be
processed is dead-lettered at once as poison. Each decision is kept as an ``Attempt``, and
people hear of every dead letter (log, Sentry, escalation).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from celery import Task
from celery.exceptions import Reject
from django.db import transaction
from django.utils import timezone

from apps.eventstore import relay
from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.subscriptions import Subscription
from apps.resilience.breakers import retry_delay
from apps.resilience.classify import Classification, classify
from apps.resilience.deliveries import Started, _finish, _Progress
from apps.resilience.hooks import call_dead_letter_hook, call_error_hook
from apps.resilience.models import Attempt, DeadLetter, Delivery
from apps.resilience.policies import RetryPolicy, policy_for
from apps.resilience.services import dead_letters, ledger
from apps.resilience.services.escalation import escalate, report_to_sentry
from apps.resilience.taxonomy import ConfigurationError, ErrorKind

logger = logging.getLogger(__name__)
Status = Delivery.Status


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
        reconcile_at=ledger.wait_deadline(next_attempt_at, countdown, started.resends),
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
