"""Reads of the console's ops API: dead letters filtered, one with its audit trail, the
letters of a failure group, escalations by state."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Max, Prefetch, QuerySet
from django.utils import timezone

from apps.eventstore.models import Event
from apps.resilience.models import DeadLetter, DeadLetterAction, Escalation
from apps.resilience.taxonomy import NotFound


class DeadLetterNotFound(NotFound):
    def __init__(self, dead_letter_id: int) -> None:
        super().__init__(f"no dead letter {dead_letter_id}")


class EscalationNotFound(NotFound):
    def __init__(self, escalation_id: int) -> None:
        super().__init__(f"no escalation {escalation_id}")


class GroupNotFound(NotFound):
    def __init__(self, fingerprint: str) -> None:
        super().__init__(f"no open dead letters of fingerprint {fingerprint}")


class BreakerNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no breaker {name}")


class ProjectionNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no projection {name}")


def log_head() -> int:
    """Return the log's last position (0 when it is empty)."""
    return Event.objects.aggregate(head=Max("position"))["head"] or 0


def dead_letters(
    *,
    status: str | None = None,
    kind: str | None = None,
    severity: str | None = None,
    handler: str | None = None,
    event_type: str | None = None,
    fingerprint: str | None = None,
    min_age_minutes: int | None = None,
) -> QuerySet[DeadLetter]:
    """Return the dead letters matching every filter given, unordered (the API's paging
    orders them); ``None`` filters nothing."""
    exact = {
        "status": status,
        "kind": kind,
        "severity": severity,
        "handler": handler,
        "event_type": event_type,
        "fingerprint": fingerprint,
    }
    found = DeadLetter.objects.filter(**{k: v for k, v in exact.items() if v is not None})
    if min_age_minutes is not None:
        cutoff = timezone.now() - timedelta(minutes=min_age_minutes)
        found = found.filter(last_failed_at__lte=cutoff)
    return found


def dead_letter(dead_letter_id: int) -> DeadLetter:
    """Return the dead letter with its audit trail (each actor loaded); raise
    ``DeadLetterNotFound`` if there is none."""
    actions = Prefetch("actions", queryset=DeadLetterAction.objects.select_related("actor"))
    found = DeadLetter.objects.prefetch_related(actions).filter(pk=dead_letter_id).first()
    if found is None:
        raise DeadLetterNotFound(dead_letter_id)
    return found


def open_letters_of_group(fingerprint: str) -> list[tuple[int, str]]:
    """Return the ids and statuses of the group's open dead letters, oldest failure first."""
    return list(
        DeadLetter.objects.filter(fingerprint=fingerprint, status__in=DeadLetter.OPEN)
        .order_by("first_failed_at", "pk")
        .values_list("pk", "status")
    )


def escalations(*, state: str | None = None) -> QuerySet[Escalation]:
    """Return escalations, newest first: ``open`` ones nobody acknowledged, ``acknowledged``
    ones not yet resolved, ``resolved`` ones; all when ``state`` is None."""
    found = Escalation.objects.select_related("acknowledged_by", "resolved_by")
    if state == "open":
        found = found.filter(acknowledged_at__isnull=True, resolved_at__isnull=True)
    elif state == "acknowledged":
        found = found.filter(acknowledged_at__isnull=False, resolved_at__isnull=True)
    elif state == "resolved":
        found = found.filter(resolved_at__isnull=False)
    return found


def escalation(escalation_id: int) -> Escalation:
    """Return one escalation; raise ``EscalationNotFound`` if there is none."""
    found = escalations().filter(pk=escalation_id).first()
    if found is None:
        raise EscalationNotFound(escalation_id)
    return found
