"""Triage of failure groups: who looks at a fingerprint, how far they got, and how long."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.resilience.models import Triage, TriageChange

Status = Triage.Status

# Where each status may go next; resolved and won't-fix may be reopened (the failure recurs).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    Status.NEW: (Status.INVESTIGATING, Status.WONT_FIX),
    Status.INVESTIGATING: (Status.FIX_DEPLOYED, Status.WONT_FIX),
    Status.FIX_DEPLOYED: (Status.REPLAYED, Status.INVESTIGATING),
    Status.REPLAYED: (Status.RESOLVED, Status.INVESTIGATING),
    Status.RESOLVED: (Status.INVESTIGATING,),
    Status.WONT_FIX: (Status.INVESTIGATING,),
}
CLOSED = (Status.RESOLVED, Status.WONT_FIX)


class TriageTransitionError(Exception):
    """The triage cannot move from its status to the one asked for."""


def target() -> timedelta:
    """Return how long a group may stay open before its triage is overdue."""
    return timedelta(hours=settings.DEAD_LETTER_TRIAGE_TARGET_HOURS)


def is_overdue(triage: Triage | None, first_seen: Any, *, now: Any = None) -> bool:
    """Return whether the group's triage is still open past the target (counted from when it
    was opened, or, for a group nobody triaged yet, from its first failure)."""
    if triage is not None and triage.status in CLOSED:
        return False
    opened = triage.opened_at if triage is not None else first_seen
    return opened is not None and (now or timezone.now()) - opened > target()


def change(
    fingerprint: str,
    *,
    actor: Any,
    status: str | None = None,
    assignee: Any = None,
    unassign: bool = False,
    notes: str = "",
) -> Triage:
    """Move the group's triage (created ``new`` on first use) to ``status`` and/or a new
    assignee, and append the change with its notes to the history; raise
    ``TriageTransitionError`` for a move ``TRANSITIONS`` does not allow."""
    with transaction.atomic():
        triage, _ = Triage.objects.select_for_update().get_or_create(
            fingerprint=fingerprint, defaults={"opened_at": timezone.now()}
        )
        before, before_assignee = triage.status, _name(triage.assignee)
        if status is not None and status != before:
            if status not in TRANSITIONS.get(before, ()):
                raise TriageTransitionError(f"a triage can't go from {before} to {status}")
            triage.status = status
        if assignee is not None or unassign:
            triage.assignee = assignee
        triage.save()
        TriageChange.objects.create(
            triage=triage,
            actor=actor,
            from_status=before,
            to_status=triage.status,
            from_assignee=before_assignee,
            to_assignee=_name(triage.assignee),
            notes=notes,
        )
    return triage


def _name(user: Any) -> str:
    return user.get_username() if user is not None else ""
