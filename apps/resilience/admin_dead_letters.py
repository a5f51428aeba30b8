"""The dead letter change list and detail page: filters, search (correlation id too), and
the read-only detail with payload, traceback, attempts, stream and correlation trace."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from apps.eventstore.admin import ReadOnlyMixin
from apps.eventstore.models import Event
from apps.resilience.admin_letter_views import ACT, DRY_RUN, EDIT, DeadLetterConsoleMixin
from apps.resilience.models import Attempt, DeadLetter, DeadLetterAction, ParkedMessage
from apps.resilience.services import dead_letters, letter_groups
from apps.resilience.services.trace import correlation_of, correlation_trace

# Shown in their own sections of the detail page (pretty JSON, the traceback as text).
SHOWN_APART = ("payload", "edited_payload", "traceback")
DETAIL_FIELDS: list[str] = [f.name for f in DeadLetter._meta.fields if f.name not in SHOWN_APART]


class AgeFilter(admin.SimpleListFilter):
    """Dead letters by when they last failed: the last hour, day, week, or older."""

    title = "age (last failure)"
    parameter_name = "age"
    AGES = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("hour", "last hour"),
            ("day", "last day"),
            ("week", "last week"),
            ("older", "older than a week"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Return the letters of the chosen age (all if none)."""
        now = timezone.now()
        if self.value() in self.AGES:
            return queryset.filter(last_failed_at__gte=now - self.AGES[str(self.value())])
        if self.value() == "older":
            return queryset.filter(last_failed_at__lt=now - self.AGES["week"])
        return queryset


class ActionInline(ReadOnlyMixin, admin.TabularInline):
    model = DeadLetterAction
    readonly_fields = ["at", "action", "actor", "notes", "details"]
    fields = [*readonly_fields]  # every column shown is read-only
    extra = 0


class ParkedInline(ReadOnlyMixin, admin.TabularInline):
    model = ParkedMessage
    readonly_fields = ["version", "event_id", "status", "reason", "released_at"]
    fields = [*readonly_fields]  # every column shown is read-only
    extra = 0


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyMixin, DeadLetterConsoleMixin):
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
    list_filter = ["status", "kind", "severity", "handler", "event_type", AgeFilter]
    search_fields = ["=fingerprint", "=event_id", "=stream_id", "message", "exception_type"]
    search_help_text = "event id, stream id or correlation id (exact), fingerprint, message"
    fields = tuple(DETAIL_FIELDS)
    readonly_fields = DETAIL_FIELDS
    inlines = [ActionInline, ParkedInline]
    actions = ["retry_selected", "retry_group", "resolve_selected", "discard_selected"]
    show_full_result_count = False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Return whether the user may run the change list's actions; never for one letter.

        A letter changes only through the audited actions below (they ask with no ``obj``),
        so its own page is view-only and a POST to it is refused (403): saving that form
        would write the whole row back as loaded, unaudited, undoing a retry or resolve
        committed meanwhile."""
        return obj is None and request.user.has_perm("resilience.change_deadletter")

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
        pks = queryset.order_by("first_failed_at", "pk").values_list("pk", flat=True)
        outcome = letter_groups.act_on(list(pks), call)
        self.message_user(request, f"{outcome.done} dead letter(s) {done}.", messages.SUCCESS)
        for reason in outcome.refused[:10]:
            self.message_user(request, reason, messages.WARNING)
        if outcome.remaining:
            self.message_user(
                request,
                f"{outcome.remaining} more not reached in this pass: run the action again.",
                messages.WARNING,
            )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter], search_term: str
    ) -> tuple[QuerySet[DeadLetter], bool]:
        """Return the usual matches, and for a UUID also the letters whose event carries it
        as its correlation id (the event's metadata: the letter does not copy it)."""
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            correlation = str(uuid.UUID(search_term.strip()))
        except ValueError:
            return found, may_have_duplicates
        correlated = Event.objects.annotate(
            correlation=KeyTextTransform("correlation_id", "metadata")
        ).filter(correlation=correlation, event_id=OuterRef("event_id"))
        return found | queryset.filter(Exists(correlated)), may_have_duplicates

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: DeadLetter | None = None,
    ) -> HttpResponse:
        """The read-only detail page with its console sections (see ``detail_context``)."""
        if obj is not None:
            context = {**context, **detail_context(request, obj)}
        return super().render_change_form(request, context, add, change, form_url, obj)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The change list, with a link to the groups page."""
        return super().changelist_view(request, {**(extra_context or {}), "has_groups": True})


def detail_context(request: HttpRequest, letter: DeadLetter) -> dict[str, Any]:
    """Return the detail page's sections: pretty payloads, attempts, the stream's events,
    the correlation trace, and which buttons the user may press."""
    correlation = correlation_of(letter.event_id)
    stream = (
        Event.objects.filter(stream_id=letter.stream_id).order_by("version")[:200]
        if letter.stream_id
        else []
    )
    return {
        "payload_json": _pretty(letter.payload),
        "edited_json": _pretty(letter.edited_payload) if letter.edited_payload is not None else "",
        "letter_traceback": letter.traceback,
        "letter_attempts": Attempt.objects.filter(
            delivery__handler=letter.handler, delivery__event_id=letter.event_id
        )
        if letter.event_id
        else [],
        "stream_events": stream,
        "correlation_id": correlation,
        "trace": correlation_trace(correlation) if correlation else [],
        "can_act": request.user.has_perm(ACT),
        "can_edit": letter.status == DeadLetter.Status.PENDING and request.user.has_perm(EDIT),
        "can_dry_run": letter.event_id is not None and request.user.has_perm(DRY_RUN),
    }


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
