"""Read models of todos: one row per todo, and per-user counters (both per generation)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from apps.todos.rules import TodoStatus


class TodoView(models.Model):
    """A todo as the API lists it; written only by the todos projection."""

    generation = models.PositiveIntegerField(default=1)
    todo_id = models.UUIDField()
    owner_id = models.IntegerField()
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    priority = models.CharField(max_length=10)
    priority_rank = models.PositiveSmallIntegerField()
    due_at = models.DateTimeField(null=True, blank=True)
    tags = models.JSONField(default=list)
    recurrence = models.CharField(max_length=500, null=True, blank=True)  # noqa: DJ001 - null: no rule
    series_id = models.UUIDField(null=True, blank=True)
    # "|tag1|tag2|": a tag filter is a substring match that works on every database.
    tags_text = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=TodoStatus.choices)
    version = models.PositiveIntegerField(help_text="the last event version applied")
    # Lower-cased title and description, for the search filter.
    search_text = models.TextField(blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["generation", "todo_id"], name="todoview_one_per_generation"
            ),
        ]
        indexes = [
            # Consumers: the API list in each of its orderings (status is filtered while
            # walking the index: a list excludes deleted todos, which would break a prefix).
            models.Index(
                fields=["owner_id", "generation", "created_at", "id"],
                name="todoview_owner_created_idx",
            ),
            models.Index(
                fields=["owner_id", "generation", "due_at", "id"], name="todoview_owner_due_idx"
            ),
            models.Index(
                fields=["owner_id", "generation", "priority_rank", "id"],
                name="todoview_priority_idx",
            ),
            models.Index(
                fields=["owner_id", "generation", "title", "id"], name="todoview_title_idx"
            ),
            # Consumers: rules.overdue_q (the overdue filter, the stats' overdue count).
            models.Index(
                fields=["owner_id", "generation", "due_at"],
                name="todoview_open_due_idx",
                condition=Q(status=TodoStatus.OPEN, due_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.status}, v{self.version})"


class TodoStats(models.Model):
    """Per-user counters kept by the todos projection (overdue is computed when read).

    A todo counts in the counter named by its status and, unless deleted, in ``total`` and
    the counter named by its priority (see ``STATS_COUNTERS``).
    """

    generation = models.PositiveIntegerField(default=1)
    owner_id = models.IntegerField()
    total = models.IntegerField(default=0, help_text="todos not deleted")
    open = models.IntegerField(default=0)
    completed = models.IntegerField(default=0)
    deleted = models.IntegerField(default=0)
    low = models.IntegerField(default=0)
    medium = models.IntegerField(default=0)
    high = models.IntegerField(default=0)
    urgent = models.IntegerField(default=0)

    class Meta:
        verbose_name_plural = "todo stats"
        constraints = [
            models.UniqueConstraint(
                fields=["generation", "owner_id"], name="todostats_one_per_owner"
            ),
        ]

    def __str__(self) -> str:
        return f"stats of user {self.owner_id}"


#: The counter columns of TodoStats, as the projection adds to them and ``stats_of`` reads them.
STATS_COUNTERS = tuple(
    field.name
    for field in TodoStats._meta.concrete_fields
    if field.name not in ("id", "generation", "owner_id")
)
