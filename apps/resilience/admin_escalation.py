"""The escalation rules in the admin, and escalations shown as open / acknowledged / resolved.

Registered by the last line of ``apps.resilience.admin``; the escalation list keeps that
module's ``EscalationAdmin`` and adds its status and a resolve action.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.resilience.admin import EscalationAdmin
from apps.resilience.escalation_rules import Channel, EscalationRule
from apps.resilience.models import Escalation
from apps.resilience.services import escalation
from apps.resilience.taxonomy import ErrorKind


class EscalationRuleForm(forms.ModelForm):
    kinds = forms.MultipleChoiceField(
        choices=ErrorKind.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="none: every kind",
    )
    channels = forms.MultipleChoiceField(
        choices=Channel.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="none: the ESCALATION_CHANNELS setting",
    )
    webhook_url = forms.URLField(
        required=False, assume_scheme="https", help_text="none: ESCALATION_WEBHOOK_URL"
    )

    class Meta:
        model = EscalationRule
        fields = [
            "name",
            "position",
            "active",
            "min_severity",
            "kinds",
            "count",
            "window_seconds",
            "open_letters_above",
            "channels",
            "webhook_url",
        ]


@admin.register(EscalationRule)
class EscalationRuleAdmin(admin.ModelAdmin):
    form = EscalationRuleForm
    list_display = [
        "position",
        "name",
        "active",
        "min_severity",
        "kinds",
        "count",
        "window_seconds",
        "open_letters_above",
        "channels",
    ]
    list_display_links = ["name"]
    list_filter = ["active", "min_severity"]
    ordering = ["position", "id"]


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "open"), ("acknowledged", "acknowledged"), ("resolved", "resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        filters = {
            "open": {"acknowledged_at__isnull": True, "resolved_at__isnull": True},
            "acknowledged": {"acknowledged_at__isnull": False, "resolved_at__isnull": True},
            "resolved": {"resolved_at__isnull": False},
        }
        chosen = filters.get(self.value() or "")
        return queryset.filter(**chosen) if chosen else queryset


class EscalationConsoleAdmin(EscalationAdmin):
    list_display = [*EscalationAdmin.list_display, "status", "resolved_at"]
    list_filter = [StatusFilter, *EscalationAdmin.list_filter]
    actions = [*EscalationAdmin.actions, "resolve"]

    @admin.display(description="status")
    def status(self, obj: Escalation) -> str:
        return obj.status

    @admin.action(description="Resolve selected escalations", permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Escalation]) -> None:
        for pk in queryset.values_list("pk", flat=True):
            escalation.resolve(pk, actor=request.user)
        self.message_user(request, "Resolved.", messages.SUCCESS)


admin.site.unregister(Escalation)
admin.site.register(Escalation, EscalationConsoleAdmin)
