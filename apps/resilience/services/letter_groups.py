"""Failure groups as the console shows them, and the operator's actions on a whole group."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.resilience.models import DeadLetter, Triage
from apps.resilience.services import dead_letters, triage
from apps.resilience.taxonomy import Severity

Status = DeadLetter.Status


@dataclass(frozen=True)
class GroupRow:
    """One fingerprint's open dead letters, with its triage (None: nobody triaged it yet)."""

    group: dead_letters.FailureGroup
    severity: str
    triage: Triage | None
    overdue: bool

    @property
    def age(self) -> Any:
        opened = self.triage.opened_at if self.triage else self.group["first_seen"]
        return timezone.now() - opened if opened else None


@dataclass(frozen=True)
class GroupOutcome:
    """What a group action did: how many letters it acted on, why it refused others, and
    how many it did not reach in its time (``CONSOLE_GROUP_ACTION_SECONDS``: act again)."""

    done: int
    refused: list[str]
    remaining: int = 0
    done_ids: list[int] = field(default_factory=list)


def rows() -> list[GroupRow]:
    """Return the open failure groups, largest first, with their triage and worst severity."""
    found = dead_letters.groups()
    prints = [group["fingerprint"] for group in found]
    triages = {row.fingerprint: row for row in Triage.objects.filter(fingerprint__in=prints)}
    worst = _worst_severity(prints)
    return [
        GroupRow(
            group=group,
            severity=worst.get(group["fingerprint"], ""),
            triage=triages.get(group["fingerprint"]),
            overdue=triage.is_overdue(triages.get(group["fingerprint"]), group["first_seen"]),
        )
        for group in found
    ]


def _worst_severity(prints: list[str]) -> dict[str, str]:
    pairs = (
        DeadLetter.objects.filter(fingerprint__in=prints, status__in=DeadLetter.OPEN)
        .values_list("fingerprint", "severity")
        .distinct()
    )
    worst: dict[str, str] = {}
    for fingerprint, severity in pairs:
        if fingerprint not in worst or Severity(severity).rank > Severity(worst[fingerprint]).rank:
            worst[fingerprint] = severity
    return worst


def retry_group(fingerprint: str, *, actor: Any) -> GroupOutcome:
    """Retry every pending dead letter of the group, each audited as a single retry."""
    return _each(fingerprint, (Status.PENDING,), lambda pk: dead_letters.retry(pk, actor=actor))


def resolve_group(fingerprint: str, *, actor: Any, notes: str) -> GroupOutcome:
    """Resolve every open dead letter of the group with ``notes``."""
    return _each(
        fingerprint, DeadLetter.OPEN, lambda pk: dead_letters.resolve(pk, actor=actor, notes=notes)
    )


def discard_group(fingerprint: str, *, actor: Any, reason: str) -> GroupOutcome:
    """Discard every open dead letter of the group; a reason is required."""
    if not reason.strip():
        raise dead_letters.DeadLetterStateError("discarding needs a reason")
    return _each(
        fingerprint,
        DeadLetter.OPEN,
        lambda pk: dead_letters.discard(pk, actor=actor, reason=reason),
    )


def _each(fingerprint: str, statuses: tuple[str, ...], call: Callable[[int], Any]) -> GroupOutcome:
    pks = DeadLetter.objects.filter(fingerprint=fingerprint, status__in=statuses).order_by(
        "first_failed_at", "pk"
    )
    return act_on(list(pks.values_list("pk", flat=True)), call)


def act_on(pks: list[int], call: Callable[[int], Any]) -> GroupOutcome:
    """Call the service on each letter by itself, in order: one letter changed meanwhile is
    refused (the service re-checks its status under a row lock) without undoing the others.
    Stops after ``CONSOLE_GROUP_ACTION_SECONDS``: a large group would outlast the web
    server's timeout and end in an error page half done."""
    deadline = time.monotonic() + settings.CONSOLE_GROUP_ACTION_SECONDS
    done: list[int] = []
    refused: list[str] = []
    for reached, pk in enumerate(pks, start=1):
        try:
            call(pk)
            done.append(pk)
        except dead_letters.DeadLetterStateError as exc:
            refused.append(str(exc))
        if time.monotonic() >= deadline:
            return GroupOutcome(len(done), refused, len(pks) - reached, done)
    return GroupOutcome(len(done), refused, 0, done)
