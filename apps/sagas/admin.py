"""The saga console: each saga with its step log and what operators did; resume, compensate."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.eventstore.admin import ReadOnlyMixin
from apps.sagas import services
from apps.sagas.models import SagaAction, SagaInstance, SagaStep


class StepInline(ReadOnlyMixin, admin.TabularInline):
    model = SagaStep
    readonly_fields = [
        "step",
        "phase",
        "attempt",
        "status",
        "final",
        "started_at",
        "finished_at",
        "error_kind",
        "error_message",
    ]
    fields = [*readonly_fields]  # every column shown is read-only
    extra = 0


class SagaActionInline(ReadOnlyMixin, admin.TabularInline):
    model = SagaAction
    readonly_fields = ["created_at", "action", "actor", "notes"]
    fields = [*readonly_fields]  # every column shown is read-only
    extra = 0


@admin.register(SagaInstance)
class SagaInstanceAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["id", "type", "state", "current_step", "subject_id", "created_at", "deadline"]
    list_filter = ["state", "type"]
    # __exact on a uuid compares it as text, so any search term is no error.
    search_fields = ["id__exact", "correlation_id__exact", "subject_id__exact"]
    readonly_fields = [f.name for f in SagaInstance._meta.fields]
    inlines = [StepInline, SagaActionInline]
    actions = ["resume_selected", "compensate_selected"]
    show_full_result_count = False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Return whether the user may run the change list's actions; never for one saga.

        A saga moves only through the services the actions call (they ask with no ``obj``):
        its own page is view-only, so no form save writes back a state the orchestrator
        changed meanwhile."""
        return obj is None and request.user.has_perm("sagas.change_sagainstance")

    @admin.action(description="Resume selected sagas", permissions=["change"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[SagaInstance]) -> None:
        self._apply(
            request, queryset, lambda pk: services.resume(pk, actor=request.user), "resumed"
        )

    @admin.action(description="Compensate selected sagas", permissions=["change"])
    def compensate_selected(self, request: HttpRequest, queryset: QuerySet[SagaInstance]) -> None:
        self._apply(
            request,
            queryset,
            lambda pk: services.compensate(pk, actor=request.user),
            "now compensating",
        )

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[SagaInstance],
        call: Callable[[uuid.UUID], Any],
        done: str,
    ) -> None:
        """Call ``call`` for each selected saga; report how many it moved, and each refusal."""
        succeeded, refused = 0, []
        for pk in queryset.values_list("pk", flat=True):
            try:
                call(pk)
                succeeded += 1
            except (services.SagaStateError, services.SagaNotFound) as exc:
                refused.append(f"{pk}: {exc}")
        self.message_user(request, f"{succeeded} saga(s) {done}.", messages.SUCCESS)
        for reason in refused[:10]:
            self.message_user(request, reason, messages.WARNING)
