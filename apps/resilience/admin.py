"""The dead-letter console: see, group, retry, resolve and discard failures; watch breakers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.db.models.expressions import Combinable
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from apps.eventstore.admin import ReadOnlyMixin
from apps.eventstore.durations import age_text
from apps.resilience.admin_dead_letters import DeadLetterAdmin
from apps.resilience.models import (
    Attempt,
    BreakerTransition,
    Delivery,
    Escalation,
    ParkedMessage,
)
from apps.resilience.services import escalation, ledger

__all__ = ["DeadLetterAdmin", "DeliveryAdmin", "ledger_panel"]


class OpenForFilter(admin.SimpleListFilter):
    """Pairs not yet at an end whose last change (``updated_at``) is older than a threshold."""

    title = "not terminal — age"
    parameter_name = "open_for"
    AGES = {"any": 0, "1m": 60, "10m": 600, "1h": 3600}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("any", "any age"),
            ("1m", "unchanged for 1 min+"),
            ("10m", "unchanged for 10 min+"),
            ("1h", "unchanged for 1 h+"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> QuerySet[Delivery]:
        """Return the not-terminal rows unchanged for the chosen age (all rows if none)."""
        seconds = self.AGES.get(self.value() or "")
        if seconds is None:
            return queryset
        cutoff = timezone.now() - timedelta(seconds=seconds)
        return queryset.filter(status__in=ledger.NOT_TERMINAL, updated_at__lte=cutoff)


class ReconcilerFilter(admin.SimpleListFilter):
    """What the reconciler sees: pairs overdue for a re-send, or re-sent in the last hour."""

    title = "reconciler"
    parameter_name = "reconciler"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("overdue", "overdue now"), ("resent_1h", "re-sent in the last hour")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> QuerySet[Delivery]:
        """Return the rows of the chosen case (all rows if none)."""
        now = timezone.now()
        if self.value() == "overdue":
            return queryset.filter(status__in=ledger.NOT_TERMINAL, reconcile_at__lte=now)
        if self.value() == "resent_1h":
            return queryset.filter(last_resent_at__gte=now - timedelta(hours=1))
        return queryset


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "handler",
        "event_id",
        "status",
        "attempts",
        "starts",
        "finishes",
        "last_kind",
        "resends",
        "last_resent_at",
        "reconcile_at",
        "updated_at",
    ]
    list_filter = ["status", OpenForFilter, ReconcilerFilter, "last_kind", "handler"]
    # event_id__exact compares the id as text, so a handler name typed here is no error.
    search_fields = ["event_id__exact", "^handler"]
    show_full_result_count = False

    def get_ordering(self, request: HttpRequest) -> list[str | Combinable]:
        """Return oldest change first when filtering by age (the rows to look at first)."""
        if OpenForFilter.parameter_name in request.GET:
            return ["updated_at"]
        return list(super().get_ordering(request))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Show the change list with the ledger summary (``ledger_panel``) above it."""
        return super().changelist_view(
            request, {**(extra_context or {}), "ledger": ledger_panel(ledger.summary())}
        )


def ledger_panel(figures: dict[str, Any]) -> dict[str, Any]:
    """Return ``ledger.summary()`` as the Delivery change list shows it: one row per
    not-terminal state (count, oldest age) and the reconciler's figures, each with the query
    string of the change list filtered to it."""
    by_state = figures["not_terminal"]
    states = []
    for status in ledger.NOT_TERMINAL:
        state = by_state.get(status.value, {})
        states.append(
            {
                "status": status.value,
                "count": state.get("count", 0),
                "oldest": age_text(state.get("oldest_seconds")),
                "url": f"?status__exact={status.value}",
                "oldest_url": f"?status__exact={status.value}&open_for=any",
            }
        )
    return {
        "states": states,
        "open_total": sum(state["count"] for state in states),
        "open_url": "?open_for=any",
        "overdue": figures["overdue"],
        "overdue_url": "?reconciler=overdue",
        "resent": figures["resent_last_hour"],
        "resent_url": "?reconciler=resent_1h",
        "resent_open": figures["resent_last_hour_open"],
        "resent_open_url": "?reconciler=resent_1h&open_for=any",
    }


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["delivery", "number", "kind", "outcome", "countdown", "exception_type", "at"]
    list_filter = ["kind", "outcome"]
    list_select_related = ["delivery"]
    show_full_result_count = False


@admin.register(ParkedMessage)
class ParkedMessageAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["handler", "stream_id", "version", "status", "reason", "created_at"]
    list_filter = ["status", "handler"]


@admin.register(BreakerTransition)
class BreakerTransitionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["at", "breaker", "from_state", "to_state", "reason", "actor"]
    list_filter = ["breaker", "to_state"]


@admin.register(Escalation)
class EscalationAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "rule",
        "kind",
        "severity",
        "count",
        "dead_letter",
        "acknowledged_at",
    ]
    list_filter = ["rule", "severity", ("acknowledged_at", admin.EmptyFieldListFilter)]
    actions = ["acknowledge"]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Return whether the user may acknowledge from the list; an escalation's own page
        is view-only (acknowledging is the audited action, not a form save)."""
        return obj is None and request.user.has_perm("resilience.change_escalation")

    @admin.action(description="Acknowledge selected escalations", permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Escalation]) -> None:
        for pk in queryset.values_list("pk", flat=True):
            escalation.acknowledge(pk, actor=request.user)
        self.message_user(request, "Acknowledged.", messages.SUCCESS)


from apps.resilience import admin_escalation  # noqa: E402, F401
