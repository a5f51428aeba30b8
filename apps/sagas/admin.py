"""The saga console: each saga with its step log and what operators did; resume, compensate."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

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

    def get_urls(self) -> list[URLPattern]:
        """Add the saga page's Resume and Compensate buttons' URL."""
        act = path(
            "<uuid:saga_id>/act/",
            self.admin_site.admin_view(self.act_view),
            name="sagas_sagainstance_act",
        )
        return [act, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Show the saga's page with its buttons, for those who may use them."""
        buttons = {"can_act": request.user.has_perm("sagas.change_sagainstance")}
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), **buttons}
        )

    @method_decorator(require_POST)
    def act_view(self, request: HttpRequest, saga_id: uuid.UUID) -> HttpResponse:
        """Resume or compensate one saga from its page (``action`` and ``notes`` posted)."""
        if not request.user.has_perm("sagas.change_sagainstance"):
            raise PermissionDenied
        commands = {"resume": services.resume, "compensate": services.compensate}
        command = commands.get(request.POST.get("action", ""))
        if command is None:
            return HttpResponseBadRequest("action must be resume or compensate")
        notes = request.POST.get("notes", "").strip()[:2000]
        try:
            saga = command(saga_id, actor=request.user, notes=notes)
        except (services.SagaStateError, services.SagaNotFound) as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:
            self.message_user(request, f"Saga {saga.pk} is {saga.state}.", messages.SUCCESS)
        return redirect(reverse("admin:sagas_sagainstance_change", args=[saga_id]))

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
