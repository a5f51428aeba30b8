"""Storage of the event log, the transactional outbox and aggregate snapshots."""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KeyTextTransform

from apps.eventstore.exceptions import AppendOnlyViolation


class AppendOnlyQuerySet(models.QuerySet):
    """Refuses bulk updates and deletes: recorded events are immutable."""

    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyViolation("events are append-only: update refused")

    def delete(self) -> NoReturn:
        raise AppendOnlyViolation("events are append-only: delete refused")


class Event(models.Model):
    """One recorded event. Append-only here and, on PostgreSQL and SQLite, by trigger."""

    position = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, editable=False)
    stream_type = models.CharField(max_length=100)
    stream_id = models.UUIDField()
    version = models.PositiveIntegerField()
    type = models.CharField(max_length=150)
    schema_version = models.PositiveSmallIntegerField(default=1)
    data = models.JSONField()
    metadata = models.JSONField()
    recorded_at = models.DateTimeField(auto_now_add=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["position"]
        constraints = [
            # Optimistic concurrency: two writers at the same version can't both commit.
            models.UniqueConstraint(
                fields=["stream_id", "version"], name="event_stream_version_uniq"
            ),
        ]
        indexes = [
            models.Index(fields=["type", "position"], name="event_type_position_idx"),
            # Consumer: reading.read_correlated (a todo's related history, the trace of a
            # correlation id).
            models.Index(
                KeyTextTransform("correlation_id", "metadata"), name="event_correlation_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.position} {self.type} {self.stream_type}/{self.stream_id} v{self.version}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyViolation("events are append-only: update refused")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyViolation("events are append-only: delete refused")


class OutboxMessage(models.Model):
    """An event waiting to be published to the broker; written in the event's transaction."""

    # No foreign key constraint in the database: the row is written by the statement that
    # writes its event, and events are never deleted nor updated (the append-only
    # triggers). Checking the key at commit locked each event row FOR KEY SHARE, which
    # writes to the row: half the cost of writing the outbox row (bench/README.md).
    event = models.OneToOneField(
        Event, on_delete=models.PROTECT, related_name="outbox", db_constraint=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Consumers: relay.publish_pending (after each commit, the publish task and the
            # beat sweep) and outbox_stats.backlog read only these.
            models.Index(
                fields=["id"], name="outbox_unpublished_idx", condition=Q(published_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        state = "published" if self.published_at else "pending"
        return f"outbox #{self.pk} ({state})"


class Snapshot(models.Model):
    """The latest saved state of one aggregate, so loading replays only later events."""

    stream_id = models.UUIDField(primary_key=True)
    stream_type = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    schema_version = models.PositiveSmallIntegerField()
    state = models.JSONField()
    taken_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"snapshot {self.stream_type}/{self.stream_id} v{self.version}"


class ProjectionState(models.Model):
    """A projection's live generation of rows, its checkpoint, and any rebuild under way."""

    name = models.CharField(max_length=100, primary_key=True)
    generation = models.PositiveIntegerField(default=1)
    position = models.BigIntegerField(default=0, help_text="highest log position applied")
    rebuilding = models.PositiveIntegerField(
        null=True, blank=True, help_text="generation being built"
    )
    rebuild_started_at = models.DateTimeField(null=True, blank=True)
    rebuilt_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"projection {self.name} (generation {self.generation}, at #{self.position})"
