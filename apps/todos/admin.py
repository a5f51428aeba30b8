"""Read-only views of the todos read models (they are written by the projection only)."""

from __future__ import annotations

from django.contrib import admin

from apps.eventstore.admin import ReadOnlyAdmin
from apps.todos.models import TodoStats, TodoView


@admin.register(TodoView)
class TodoViewAdmin(ReadOnlyAdmin):
    list_display = ["title", "owner_id", "status", "priority", "due_at", "version", "generation"]
    list_filter = ["status", "priority", "generation"]
    search_fields = ["=todo_id", "title"]
    show_full_result_count = False


@admin.register(TodoStats)
class TodoStatsAdmin(ReadOnlyAdmin):
    list_display = ["owner_id", "generation", "total", "open", "completed", "deleted"]
