"""Dead letters: writing them, and the operator's retry, resolve, discard and statistics."""

from __future__ import annotations

import hashlib
import traceback
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Max, Min, Q
from django.utils import timezone

from apps.eventstore.models import Event
from apps.resilience.classify import Classification
from apps.resilience.models import DeadLetter, DeadLetterAction, Delivery
from apps.resilience.services import ledger, parking
from apps.resilience.services.escalation import escalate
from apps.resilience.taxonomy import BusinessRuleViolation, ErrorKind, Severity

Status = DeadLetter.Status
Action = DeadLetterAction.Action
OPEN = DeadLetter.OPEN


class DeadLetterStateError(BusinessRuleViolation):
    """The dead letter is not in a state that allows the action (e.g. retrying a resolved
    one): a refused command, which the API answers with a 409."""


def fingerprint(exc: BaseException) -> str:
    """Return what groups alike failures: the exception type and the frame that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        top = frames[-1]
        where = f"{_relative(top.filename)}:{top.name}"
    key = f"{type(exc).__module__}.{type(exc).__qualname__}@{where}"
    return hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:16]


def _relative(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(settings.BASE_DIR))
    except ValueError:
        return Path(filename).name


def record(
    *,
    handler: str,
    exc: BaseException,
    classification: Classification,
    attempts: int,
    event: Event | None = None,
    event_id: Any = None,
    raw_payload: Any = None,
) -> DeadLetter:
    """Write (or, for a pair that failed before, update) the dead letter of a final failure."""
    now = timezone.now()
    details = {
        "kind": classification.kind,
        "severity": classification.severity,
        "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc)[:10_000],
        "traceback": "".join(traceback.format_exception(exc))[-20_000:],
        "fingerprint": fingerprint(exc),
        "last_failed_at": now,
        "status": Status.PENDING,
        "next_retry_at": _next_auto_retry(classification.kind, now),
    }
    if event is not None:
        details.update(
            event_type=event.type,
            stream_type=event.stream_type,
            stream_id=event.stream_id,
            event_version=event.version,
            payload=event.data,
        )
    elif raw_payload is not None:
        details["payload"] = raw_payload
    key_event_id = event.event_id if event is not None else event_id
    with transaction.atomic():
        letter, was_retrying = _upsert(handler, key_event_id, details, attempts, now)
        if was_retrying:
            DeadLetterAction.objects.create(
                dead_letter=letter,
                action=Action.RETRY_FAILED,
                details={"kind": classification.kind, "message": details["message"][:500]},
            )
        DeadLetterAction.objects.create(
            dead_letter=letter,
            action=Action.DEAD_LETTERED,
            details={"kind": classification.kind, "attempts": attempts},
        )
    return letter


def _upsert(
    handler: str, event_id: Any, details: dict[str, Any], attempts: int, now: Any
) -> tuple[DeadLetter, bool]:
    """Return the dead letter and whether it was being retried (a replay that failed)."""
    if event_id is not None:
        existing = (
            DeadLetter.objects.select_for_update()
            .filter(handler=handler, event_id=event_id)
            .first()
        )
        if existing is not None:
            was_retrying = existing.status == Status.RETRYING
            for field, value in details.items():
                setattr(existing, field, value)
            existing.attempts += attempts
            existing.save()
            return existing, was_retrying
    letter = DeadLetter.objects.create(
        handler=handler, event_id=event_id, attempts=attempts, first_failed_at=now, **details
    )
    return letter, False


def _next_auto_retry(kind: ErrorKind, now: Any) -> Any:
    if kind.value not in settings.DEAD_LETTER_AUTO_RETRY_KINDS:
        return None
    return now + timedelta(seconds=settings.DEAD_LETTER_AUTO_RETRY_SECONDS)


def retry(
    dead_letter_id: int, *, actor: Any = None, payload: Any = None, automatic: bool = False
) -> DeadLetter:
    """Re-run the same handler on the same event (optionally on an edited payload).

    The dead letter goes ``retrying`` now, then ``resolved`` when the handler succeeds or
    back to ``pending`` with more attempts when it fails again.
    """
    with transaction.atomic():
        letter = _claim(dead_letter_id, (Status.PENDING,), Status.RETRYING)
        if letter.event_id is None:
            raise DeadLetterStateError(
                "this dead letter has no event to replay; resolve or discard it"
            )
        if payload is not None:
            letter.edited_payload = payload
            _audit(letter, Action.EDIT_PAYLOAD, actor, details={"payload": payload})
        if automatic:
            letter.auto_retries += 1
        letter.next_retry_at = None
        letter.save()
        _audit(letter, Action.AUTO_RETRY if automatic else Action.RETRY, actor)
        # The delivery starts afresh: a full retry budget, earlier worker losses forgiven.
        Delivery.objects.filter(handler=letter.handler, event_id=letter.event_id).update(
            attempts=0, finishes=F("starts")
        )
        # Queued in the ledger with the letter's state change: a broker error can delay
        # the replay (the reconciler re-sends it), never lose it.
        ledger.requeue(letter.handler, letter.event_id, replay_of=letter.pk)
    return letter


def resolve(dead_letter_id: int, *, actor: Any, notes: str = "") -> DeadLetter:
    """Close the dead letter as handled (by a fix elsewhere); the stream's parked events
    are then released one at a time, in version order (the first now, unless blocked)."""
    with transaction.atomic():
        letter = _claim(dead_letter_id, OPEN, Status.RESOLVED, actor=actor, notes=notes)
        _audit(letter, Action.RESOLVE, actor, notes)
        parking.release_next(letter.handler, letter.stream_id)
    return letter


def discard(dead_letter_id: int, *, actor: Any, reason: str) -> DeadLetter:
    """Close the dead letter as not worth processing; the stream's parked events
    are then released one at a time, in version order (the first now, unless blocked)."""
    if not reason.strip():
        raise DeadLetterStateError("discarding needs a reason")
    with transaction.atomic():
        letter = _claim(dead_letter_id, OPEN, Status.DISCARDED, actor=actor, notes=reason)
        _audit(letter, Action.DISCARD, actor, reason)
        parking.release_next(letter.handler, letter.stream_id)
    return letter


def raise_severity(dead_letter_id: int, severity: Severity, *, reason: str) -> DeadLetter:
    """Raise the letter's severity to ``severity`` (its owner knows the failure is worse
    than its kind says: a saga left half undone), audit it, and escalate it again under
    the new severity. A letter already that severe or worse is left as it is."""
    with transaction.atomic():
        letter = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
        if Severity(letter.severity).rank >= severity.rank:
            return letter
        before = letter.severity
        letter.severity = severity
        letter.save(update_fields=["severity"])
        _audit(letter, Action.SEVERITY_RAISED, None, reason, {"from": before, "to": severity})
    escalate(letter)
    return letter


def retry_succeeded(dead_letter_id: int) -> None:
    """Mark a replayed dead letter resolved (called by the delivery runtime inside the
    handler's transaction, so the letter is resolved only if the handler's work commits)."""
    with transaction.atomic():
        letter = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
        if letter.status != Status.RETRYING:
            return
        letter.status = Status.RESOLVED
        letter.resolved_at = timezone.now()
        letter.resolution_notes = "retry succeeded"
        letter.save()
        _audit(letter, Action.RETRY_SUCCEEDED, None)


def _claim(
    dead_letter_id: int,
    allowed: tuple[str, ...],
    new_status: str,
    *,
    actor: Any = None,
    notes: str = "",
) -> DeadLetter:
    letter = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
    if letter.status not in allowed:
        raise DeadLetterStateError(
            f"dead letter #{letter.pk} is {letter.status}, not {' or '.join(allowed)}"
        )
    letter.status = new_status
    if new_status in (Status.RESOLVED, Status.DISCARDED):
        letter.resolved_by = actor
        letter.resolved_at = timezone.now()
        letter.resolution_notes = notes
        letter.next_retry_at = None
    letter.save()
    return letter


def _audit(
    letter: DeadLetter, action: str, actor: Any, notes: str = "", details: Any = None
) -> None:
    DeadLetterAction.objects.create(
        dead_letter=letter, action=action, actor=actor, notes=notes, details=details or {}
    )


def sweep_due(*, limit: int = 100) -> int:
    """Retry the pending dead letters whose automatic retry time has come; return how many.

    Claims rows with ``FOR UPDATE SKIP LOCKED`` so two beats never retry one twice.
    """
    now = timezone.now()
    with transaction.atomic():
        due = list(
            DeadLetter.objects.select_for_update(skip_locked=True)
            .filter(status=Status.PENDING, next_retry_at__lte=now)
            .order_by("next_retry_at")
            .values_list("pk", "auto_retries")[:limit]
        )
        retried = 0
        for pk, auto_retries in due:
            if auto_retries >= settings.DEAD_LETTER_AUTO_RETRY_LIMIT:
                DeadLetter.objects.filter(pk=pk).update(next_retry_at=None)
                continue
            retry(pk, automatic=True)
            retried += 1
    return retried


def stats() -> dict[str, Any]:
    """Return the open dead letters' depth by kind, severity and handler, and the oldest age."""
    open_letters = DeadLetter.objects.filter(status__in=OPEN)
    oldest = open_letters.aggregate(oldest=Min("first_failed_at"))["oldest"]
    return {
        "open": open_letters.count(),
        "by_kind": _count_by(open_letters, "kind"),
        "by_severity": _count_by(open_letters, "severity"),
        "by_handler": _count_by(open_letters, "handler"),
        "by_status": _count_by(DeadLetter.objects.all(), "status"),
        "oldest_age_seconds": (timezone.now() - oldest).total_seconds() if oldest else None,
    }


def _count_by(queryset: Any, field: str) -> dict[str, int]:
    rows = queryset.order_by().values(field).annotate(n=Count("pk"))
    return {row[field]: row["n"] for row in rows}


class FailureGroup(TypedDict):
    """Dead letters of one fingerprint, as ``groups`` counts them."""

    fingerprint: str
    kind: str
    exception_type: str
    count: int
    handlers: int
    handler: str  # the first by name, when several
    first_seen: datetime | None
    latest: datetime | None
    critical: int


def groups(*, status: tuple[str, ...] = OPEN) -> list[FailureGroup]:
    """Return dead letters grouped by fingerprint, largest group first."""
    return list(
        DeadLetter.objects.filter(status__in=status)
        .order_by()
        .values("fingerprint", "kind", "exception_type")
        .annotate(
            count=Count("pk"),
            handlers=Count("handler", distinct=True),
            handler=Min("handler"),
            first_seen=Min("first_failed_at"),
            latest=Max("last_failed_at"),
            critical=Count("pk", filter=Q(severity="critical")),
        )
        .order_by("-count")
    )
