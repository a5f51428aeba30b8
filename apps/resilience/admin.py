"""The dead-letter console: see, group, retry, resolve and discard failures; watch breakers."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from apps.eventstore.admin import ReadOnlyMixin
from apps.resilience.models import (
    Attempt,
    BreakerTransition,
    DeadLetter,
    DeadLetterAction,
    Delivery,
    Escalation,
    ParkedMessage,
)
from apps.resilience.services import dead_letters, escalation


class ActionInline(ReadOnlyMixin, admin.TabularInline):
    model = DeadLetterAction
    fields = ["at", "action", "actor", "notes", "details"]
    readonly_fields = fields
    extra = 0


class ParkedInline(ReadOnlyMixin, admin.TabularInline):
    model = ParkedMessage
    fields = ["version", "event_id", "status", "reason", "released_at"]
    readonly_fields = fields
    extra = 0


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "handler",
        "kind",
        "severity",
        "status",
        "event_type",
        "attempts",
        "last_failed_at",
        "fingerprint",
    ]
    list_filter = ["status", "kind", "severity", "handler", "last_failed_at"]
    search_fields = ["=fingerprint", "=event_id", "=stream_id", "message", "exception_type"]
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    inlines = [ActionInline, ParkedInline]
    actions = ["retry_selected", "retry_group", "resolve_selected", "discard_selected"]
    show_full_result_count = False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Viewing needs view permission; the actions below check change permission themselves.
        return request.user.has_perm("resilience.change_deadletter")

    @admin.action(description="Retry selected dead letters", permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        self._apply(
            request, queryset, lambda pk: dead_letters.retry(pk, actor=request.user), "retried"
        )

    @admin.action(
        description="Retry every open dead letter of the selected groups", permissions=["change"]
    )
    def retry_group(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        prints = set(queryset.values_list("fingerprint", flat=True))
        group = DeadLetter.objects.filter(fingerprint__in=prints, status=DeadLetter.Status.PENDING)
        self._apply(
            request, group, lambda pk: dead_letters.retry(pk, actor=request.user), "retried"
        )

    @admin.action(description="Resolve selected (with notes)", permissions=["change"])
    def resolve_selected(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter]
    ) -> HttpResponse | None:
        return self._with_notes(request, queryset, "resolve", dead_letters.resolve, "notes")

    @admin.action(description="Discard selected (with a reason)", permissions=["change"])
    def discard_selected(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter]
    ) -> HttpResponse | None:
        return self._with_notes(request, queryset, "discard", dead_letters.discard, "reason")

    def _with_notes(
        self,
        request: HttpRequest,
        queryset: QuerySet[DeadLetter],
        verb: str,
        service: Any,
        arg: str,
    ) -> HttpResponse | None:
        notes = request.POST.get("notes", "").strip()
        if "apply" in request.POST and notes:
            self._apply(
                request,
                queryset,
                lambda pk: service(pk, actor=request.user, **{arg: notes}),
                f"{verb}d",
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb.capitalize()} dead letters",
            "verb": verb,
            "queryset": queryset,
            "action": f"{verb}_selected",
            "missing_notes": "apply" in request.POST,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/resilience/notes_action.html", context)

    def _apply(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter], call: Any, done: str
    ) -> None:
        succeeded, refused = 0, []
        for pk in queryset.values_list("pk", flat=True):
            try:
                call(pk)
                succeeded += 1
            except dead_letters.DeadLetterStateError as exc:
                refused.append(str(exc))
        self.message_user(request, f"{succeeded} dead letter(s) {done}.", messages.SUCCESS)
        for reason in refused[:10]:
            self.message_user(request, reason, messages.WARNING)


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
        "updated_at",
    ]
    list_filter = ["status", "last_kind", "handler"]
    search_fields = ["=event_id"]
    show_full_result_count = False


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
        return request.user.has_perm("resilience.change_escalation")

    @admin.action(description="Acknowledge selected escalations", permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Escalation]) -> None:
        for pk in queryset.values_list("pk", flat=True):
            escalation.acknowledge(pk, actor=request.user)
        self.message_user(request, "Acknowledged.", messages.SUCCESS)
