"""The console's dashboard (the admin index): the system's state at a glance, every figure with
the link to the change list filtered to the rows it counts.

A selector: aggregate queries only (a handful per page, none per row), no writes.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import redis
from django.db.models import Count, Max, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from apps.console import failure_chart
from apps.eventstore import outbox_stats, projections
from apps.eventstore.admin import UNPUBLISHED_QUERY
from apps.eventstore.durations import age_text
from apps.eventstore.models import Event, ProjectionState
from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import OPEN_DEAD_LETTER_STATUSES, BreakerTransition, DeadLetter
from apps.resilience.services import ledger
from apps.resilience.taxonomy import ErrorKind, Severity
from apps.sagas.models import SagaInstance

logger = logging.getLogger(__name__)
Figure = dict[str, Any]
# A breaker in one of these states holds calls back (a half-open one lets probes through only).
HOLDING = (State.OPEN, State.HALF_OPEN, State.FORCED_OPEN)


def figures(*, now: datetime | None = None) -> dict[str, Any]:
    """Return every figure of the dashboard, as the admin index template shows them."""
    now = now or timezone.now()
    return {
        "dead_letters": dead_letters(now),
        "breakers": open_breakers(),
        "sagas": sagas(now),
        "projections": projection_lag(),
        "outbox": outbox(now),
        "ledger": deliveries(now),
        "chart": failure_chart.last_hour(now),
    }


def changelist(model: str, **filters: str) -> str:
    """Return the admin change list URL of ``model`` ("app_label.model"), filtered."""
    app_label, name = model.split(".")
    url = reverse(f"admin:{app_label}_{name}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def dead_letters(now: datetime) -> Figure:
    """Return the open dead letters by kind and by severity, and the oldest open one."""
    open_letters = DeadLetter.objects.filter(status__in=OPEN_DEAD_LETTER_STATUSES)
    open_filter = {"status__in": ",".join(OPEN_DEAD_LETTER_STATUSES)}
    by_kind: dict[str, int] = {}
    by_severity: dict[str, int] = {}
    for row in open_letters.order_by().values("kind", "severity").annotate(n=Count("pk")):
        by_kind[row["kind"]] = by_kind.get(row["kind"], 0) + row["n"]
        by_severity[row["severity"]] = by_severity.get(row["severity"], 0) + row["n"]
    return {
        "open": sum(by_kind.values()),
        "open_url": changelist("resilience.deadletter", **open_filter),
        "by_kind": [
            _count(kind, by_kind, "resilience.deadletter", kind__exact=kind, **open_filter)
            for kind in ErrorKind.values
            if kind in by_kind
        ],
        "by_severity": [
            _count(
                level, by_severity, "resilience.deadletter", severity__exact=level, **open_filter
            )
            for level in reversed(Severity.values)  # critical first
            if level in by_severity
        ],
        "oldest": _oldest_letter(open_letters, now),
    }


def _count(key: str, counts: dict[str, int], model: str, **filters: str) -> Figure:
    return {"label": key, "count": counts[key], "url": changelist(model, **filters)}


def _oldest_letter(open_letters: Any, now: datetime) -> Figure | None:
    """Return the open dead letter that failed first, linked to its own page (its cause)."""
    letter = (
        open_letters.order_by("first_failed_at", "pk")
        .only("pk", "handler", "kind", "exception_type", "message", "first_failed_at")
        .first()
    )
    if letter is None:
        return None
    return {
        "letter": letter,
        "age": age_text((now - letter.first_failed_at).total_seconds()),
        "url": reverse("admin:resilience_deadletter_change", args=[letter.pk]),
    }


def open_breakers() -> Figure:
    """Return the breakers holding calls back now, by their live state in the cache.

    A breaker is known once it has changed state (its transitions name it), as ``manage.py
    breaker list`` knows them; with the cache unreachable their state is unknown."""
    names = BreakerTransition.objects.order_by().values_list("breaker", flat=True).distinct()
    held, unknown = [], False
    for name in sorted(names):
        try:
            snapshot = CircuitBreaker(name).snapshot()
        except (redis.RedisError, OSError) as exc:
            logger.warning("dashboard: breaker states unknown, cache unreachable (%s)", exc)
            unknown = True
            break
        if snapshot.state in HOLDING:
            url = changelist("resilience.breakertransition", breaker__exact=name)
            held.append({"name": name, "state": snapshot.state.value, "url": url})
    return {"open": held, "known": len(names), "unknown": unknown}


def sagas(now: datetime) -> Figure:
    """Return the stuck sagas (active past their deadline) and the failed ones."""
    active = ",".join(SagaInstance.ACTIVE)
    stuck_q = Q(state__in=SagaInstance.ACTIVE, deadline__lt=now)
    counts = SagaInstance.objects.aggregate(
        stuck=Count("pk", filter=stuck_q),
        failed=Count("pk", filter=Q(state=SagaInstance.State.FAILED)),
    )
    return {
        "stuck": counts["stuck"],
        "stuck_url": changelist(
            "sagas.sagainstance", state__in=active, deadline__lt=now.isoformat()
        ),
        "failed": counts["failed"],
        "failed_url": changelist("sagas.sagainstance", state__exact=SagaInstance.State.FAILED),
    }


def projection_lag() -> list[Figure]:
    """Return each projection's checkpoint, the log's last position, and its lag: the events
    of its types past the checkpoint (other apps' events are nothing it has left to do)."""
    checkpoints = dict(ProjectionState.objects.values_list("name", "position"))
    last = Event.objects.aggregate(last=Max("position"))["last"] or 0
    rows = []
    for name in projections.names():
        position = checkpoints.get(name, 0)
        types = projections.projection(name).event_types
        lag = Event.objects.filter(type__in=types, position__gt=position).count()
        url = changelist("eventstore.projectionstate", name__exact=name)
        rows.append({"name": name, "position": position, "last": last, "lag": lag, "url": url})
    return rows


def outbox(now: datetime) -> Figure:
    """Return the outbox backlog: unpublished rows and the oldest one's age."""
    backlog = outbox_stats.backlog(now=now)
    return {
        "unpublished": backlog["unpublished"],
        "oldest_age": age_text(backlog["oldest_seconds"]),
        "url": changelist("eventstore.outboxmessage") + UNPUBLISHED_QUERY,
    }


def deliveries(now: datetime) -> Figure:
    """Return the ledger's deliveries not yet terminal, in all and by state."""
    by_state = ledger.summary(now=now)["not_terminal"]
    assert isinstance(by_state, dict)
    states = [
        {
            "label": status.value,
            "count": by_state[status.value]["count"],
            "oldest": age_text(by_state[status.value]["oldest_seconds"]),
            "url": changelist("resilience.delivery", status__exact=status.value),
        }
        for status in ledger.NOT_TERMINAL
        if status.value in by_state
    ]
    return {
        "open": sum(state["count"] for state in states),
        "open_url": changelist("resilience.delivery", open_for="any"),
        "states": states,
    }
