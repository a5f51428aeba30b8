"""A saga's persisted state: the instance, its step log, and what operators did to it.

``SagaInstance`` is the state machine the orchestrator moves under a row lock; the saga's
events (``apps.sagas.events``) are its history in the log, and every step's message is
one of those events, so it goes through the outbox and the delivery ledger.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class SagaInstance(models.Model):
    class State(models.TextChoices):
        RUNNING = "running"
        COMPLETED = "completed"
        COMPENSATING = "compensating"
        COMPENSATED = "compensated"
        # A compensation could not be done: an operator must act.
        FAILED = "failed"

    ACTIVE = (State.RUNNING, State.COMPENSATING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, help_text="its stream's id")
    type = models.CharField(max_length=100)
    state = models.CharField(max_length=20, choices=State.choices, default=State.RUNNING)
    correlation_id = models.UUIDField(db_index=True)
    trigger_event_id = models.UUIDField(help_text="the event that started it")
    subject_id = models.UUIDField(
        null=True, blank=True, db_index=True, help_text="what it works on (a todo's id)"
    )
    current_step = models.CharField(max_length=100, blank=True)
    # The event whose delivery runs the current step or compensation; any other message of
    # this saga is stale (redelivered or superseded) and does nothing.
    pending_event_id = models.UUIDField(null=True, blank=True)
    context = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=0, help_text="its stream's last version")
    deadline = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["type", "trigger_event_id"], name="saga_once_per_trigger"
            )
        ]
        indexes = [
            # Consumer: sweeps.overdue (active sagas past their deadline).
            models.Index(
                fields=["deadline"],
                name="saga_active_deadline_idx",
                condition=Q(state__in=["running", "compensating"]),
            ),
            models.Index(fields=["state", "type", "-created_at"], name="saga_state_type_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.state})"


class SagaStep(models.Model):
    """One run of a step or a compensation that ended: completed, failed or skipped."""

    class Phase(models.TextChoices):
        ACTION = "action"
        COMPENSATION = "compensation"

    class Status(models.TextChoices):
        COMPLETED = "completed"
        FAILED = "failed"  # this attempt failed (retried unless ``final``)
        SKIPPED = "skipped"

    saga = models.ForeignKey(SagaInstance, on_delete=models.CASCADE, related_name="steps")
    step = models.CharField(max_length=100)
    phase = models.CharField(max_length=20, choices=Phase.choices)
    attempt = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices)
    final = models.BooleanField(default=False, help_text="no attempt follows this one")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(auto_now_add=True)
    error_kind = models.CharField(max_length=30, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        ordering = ["finished_at", "id"]
        indexes = [models.Index(fields=["saga", "step", "phase"], name="sagastep_saga_step_idx")]

    def __str__(self) -> str:
        return f"{self.step} ({self.phase}) #{self.attempt}: {self.status}"


class SagaAction(models.Model):
    """What an operator did to a saga (resume, compensate), and why."""

    class Action(models.TextChoices):
        RESUMED = "resumed"
        COMPENSATED = "compensated"

    saga = models.ForeignKey(SagaInstance, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=20, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_id or 'system'}"
