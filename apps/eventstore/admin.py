"""Read-only views of the event log and the outbox for operators."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from apps.eventstore import outbox_stats, projections
from apps.eventstore.durations import age_text
from apps.eventstore.models import Event, OutboxMessage, ProjectionState

# The change list filtered to unpublished rows (``EmptyFieldListFilter`` on published_at).
UNPUBLISHED_QUERY = "?published_at__isempty=1"


class ReadOnlyMixin:
    """Operators look; nothing here writes (rows are written by services and projections)."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    pass


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["position", "type", "stream_type", "stream_id", "version", "recorded_at"]
    list_filter = ["stream_type", "type"]
    search_fields = ["=stream_id", "=event_id"]
    show_full_result_count = False  # counting a large log on every page view is expensive


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "event", "created_at", "published_at", "attempts", "last_error"]
    list_select_related = ["event"]
    list_filter = [("published_at", admin.EmptyFieldListFilter)]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Show the change list with the backlog (``backlog_panel``) above it."""
        return super().changelist_view(
            request, {**(extra_context or {}), "backlog": backlog_panel()}
        )


def backlog_panel() -> dict[str, Any]:
    """Return the outbox backlog as the change list template shows it, with the query
    string of the unpublished rows' list."""
    figures = outbox_stats.backlog()
    return {
        **figures,
        "oldest_age": age_text(figures["oldest_seconds"]),
        "url": UNPUBLISHED_QUERY,  # ordered by id, so the oldest row comes first
    }


@admin.register(ProjectionState)
class ProjectionStateAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "generation",
        "position",
        "lag",
        "rebuilding",
        "rebuilt_at",
        "updated_at",
    ]

    @admin.display(description="lag (positions)")
    def lag(self, state: ProjectionState) -> int:
        return projections.lag(state.name)
