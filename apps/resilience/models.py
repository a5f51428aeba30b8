"""Failure as data: deliveries and their attempts, processed marks, dead letters, parked
messages, breaker transitions and escalations."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.resilience.taxonomy import ErrorKind, Severity


class ProcessedMessage(models.Model):
    """Handler H has processed event E: written in the handler's own transaction."""

    handler = models.CharField(max_length=200)
    event_id = models.UUIDField()
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["handler", "event_id"], name="processed_once"),
        ]

    def __str__(self) -> str:
        return f"{self.handler} processed {self.event_id}"


class Delivery(models.Model):
    """One (handler, event) pair in the delivery ledger: the database, not the broker, knows
    whether it has reached an end.

    The relay records a ``queued`` row per subscribed handler in the transaction that marks
    the event's outbox row published; the runtime moves it through ``running`` to an end
    (``succeeded``, ``dead_lettered``, ``parked``) or to a wait (``retrying``, ``deferred``).
    ``reconcile_at`` is when a row that made no progress is sent again by the reconciler
    (``apps.resilience.services.ledger``): a lost message costs a delay, never the event.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        RETRYING = "retrying"
        DEFERRED = "deferred"
        SUCCEEDED = "succeeded"
        PARKED = "parked"
        DEAD_LETTERED = "dead_lettered"

    handler = models.CharField(max_length=200)
    event_id = models.UUIDField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    # starts - finishes - 1 at a start = how many earlier runs died with their worker.
    starts = models.PositiveIntegerField(default=0)
    finishes = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)  # attempts spent under retry policies
    last_kind = models.CharField(max_length=20, choices=ErrorKind.choices, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the reconciler sends the pair again unless it has moved on by then (NULL: at an end).
    reconcile_at = models.DateTimeField(null=True, blank=True)
    resends = models.PositiveIntegerField(default=0, help_text="messages the reconciler re-sent")
    last_resent_at = models.DateTimeField(null=True, blank=True)
    # The dead letter whose retry this delivery runs (its edited payload, its resolution).
    replay_of = models.ForeignKey(
        "DeadLetter", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["handler", "event_id"], name="one_delivery_per_pair"),
        ]
        indexes = [
            # Consumer: ledger.reconcile, which claims the pairs due for a re-send.
            models.Index(
                fields=["reconcile_at"],
                name="delivery_reconcile_idx",
                condition=Q(status__in=["queued", "running", "retrying", "deferred"]),
            ),
            # Consumer: the admin's and health's "not yet at an end" counts.
            models.Index(
                fields=["status", "updated_at"],
                name="delivery_open_idx",
                condition=Q(status__in=["queued", "running", "retrying", "deferred"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.handler} <- {self.event_id} ({self.status})"


class Attempt(models.Model):
    """One failed run of a delivery and what the runtime decided."""

    class Outcome(models.TextChoices):
        RETRY = "retry"
        DEFER = "defer"
        DEAD_LETTER = "dead_letter"

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField(help_text="attempts spent, including this one")
    kind = models.CharField(max_length=20, choices=ErrorKind.choices)
    exception_type = models.CharField(max_length=200)
    message = models.TextField(blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    countdown = models.FloatField(null=True, blank=True)
    ceiling = models.FloatField(null=True, blank=True, help_text="the policy's longest countdown")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery}: {self.kind} -> {self.outcome}"


# A dead letter still in play (not yet resolved or discarded): holds back its stream's
# later events from an ordered handler, counts in the console's depth.
OPEN_DEAD_LETTER_STATUSES = ("pending", "retrying")


class DeadLetter(models.Model):
    """Work that could not succeed, kept whole so an operator can understand and replay it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RETRYING = "retrying"
        RESOLVED = "resolved"
        DISCARDED = "discarded"

    OPEN = OPEN_DEAD_LETTER_STATUSES

    handler = models.CharField(max_length=200)
    event_id = models.UUIDField(null=True, blank=True)
    event_type = models.CharField(max_length=150, blank=True)
    stream_type = models.CharField(max_length=100, blank=True)
    stream_id = models.UUIDField(null=True, blank=True)
    event_version = models.PositiveIntegerField(null=True, blank=True)
    payload = models.JSONField(null=True, blank=True, help_text="the event data as stored")
    edited_payload = models.JSONField(null=True, blank=True, help_text="used by the next retry")
    kind = models.CharField(max_length=20, choices=ErrorKind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    exception_type = models.CharField(max_length=200)
    message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    fingerprint = models.CharField(max_length=40)
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    next_retry_at = models.DateTimeField(null=True, blank=True)
    auto_retries = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_notes = models.TextField(blank=True)

    class Meta:
        ordering = ["-last_failed_at"]
        permissions = [
            ("edit_deadletter_payload", "Can edit a dead letter's payload and retry it"),
            ("dry_run_deadletter", "Can dry-run a dead letter's handler"),
        ]
        constraints = [
            # A (handler, event) pair has one dead letter; failing again updates it.
            models.UniqueConstraint(
                fields=["handler", "event_id"],
                condition=Q(event_id__isnull=False),
                name="one_dead_letter_per_delivery",
            ),
        ]
        indexes = [
            models.Index(fields=["fingerprint", "status"], name="deadletter_group_idx"),
            models.Index(fields=["status", "kind"], name="deadletter_status_kind_idx"),
            # Consumer: dead_letters.sweep_due (automatic retries) reads only these rows.
            models.Index(
                fields=["next_retry_at"],
                name="deadletter_due_idx",
                condition=Q(status="pending", next_retry_at__isnull=False),
            ),
            # Consumer: the ordered-handler parking check.
            models.Index(
                fields=["handler", "stream_id", "event_version"],
                name="deadletter_open_stream_idx",
                condition=Q(status__in=list(OPEN_DEAD_LETTER_STATUSES)),
            ),
        ]

    def __str__(self) -> str:
        return f"dead letter #{self.pk} {self.handler} {self.kind} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN


class DeadLetterAction(models.Model):
    """The audit trail of a dead letter: every retry, resolution, discard and edit."""

    class Action(models.TextChoices):
        DEAD_LETTERED = "dead_lettered"
        RETRY = "retry"
        AUTO_RETRY = "auto_retry"
        RETRY_SUCCEEDED = "retry_succeeded"
        RETRY_FAILED = "retry_failed"
        RESOLVE = "resolve"
        DISCARD = "discard"
        EDIT_PAYLOAD = "edit_payload"
        SEVERITY_RAISED = "severity_raised"

    dead_letter = models.ForeignKey(DeadLetter, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=20, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    notes = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.action} on #{self.dead_letter_id}"


class Triage(models.Model):
    """An operator's handling of one failure group (a fingerprint), from new to resolved."""

    class Status(models.TextChoices):
        NEW = "new"
        INVESTIGATING = "investigating"
        FIX_DEPLOYED = "fix_deployed"
        REPLAYED = "replayed"
        RESOLVED = "resolved"
        WONT_FIX = "wont_fix"

    fingerprint = models.CharField(max_length=40, unique=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"triage of {self.fingerprint} ({self.status})"


class TriageChange(models.Model):
    """One change of a triage (status, assignee, a note): its append-only history."""

    triage = models.ForeignKey(Triage, on_delete=models.CASCADE, related_name="changes")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20)
    from_assignee = models.CharField(max_length=150, blank=True)
    to_assignee = models.CharField(max_length=150, blank=True)
    notes = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.triage.fingerprint}: {self.from_status} -> {self.to_status}"


class ParkedMessage(models.Model):
    """A later event of a stream held back from an ordered handler by an open dead letter."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RELEASED = "released"

    handler = models.CharField(max_length=200)
    event_id = models.UUIDField()
    stream_id = models.UUIDField()
    version = models.PositiveIntegerField()
    blocked_by = models.ForeignKey(DeadLetter, on_delete=models.PROTECT, related_name="parked")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["handler", "stream_id", "version"]
        constraints = [
            models.UniqueConstraint(fields=["handler", "event_id"], name="parked_once"),
        ]
        indexes = [
            models.Index(
                fields=["handler", "stream_id", "version"],
                name="parked_pending_idx",
                condition=Q(status="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.handler} v{self.version} of {self.stream_id} ({self.reason})"


class BreakerTransition(models.Model):
    """A circuit breaker changed state (or an operator forced it)."""

    breaker = models.CharField(max_length=200, db_index=True)
    from_state = models.CharField(max_length=20)
    to_state = models.CharField(max_length=20)
    reason = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.breaker}: {self.from_state} -> {self.to_state}"


class Escalation(models.Model):
    """Someone was told about dead letters; operators acknowledge it in the console."""

    rule = models.CharField(max_length=100)
    dead_letter = models.ForeignKey(
        DeadLetter, on_delete=models.CASCADE, related_name="escalations"
    )
    fingerprint = models.CharField(max_length=40, db_index=True)
    kind = models.CharField(max_length=20, choices=ErrorKind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    count = models.PositiveIntegerField(help_text="dead letters of this group in the rule's window")
    channels = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"escalation ({self.rule}) of {self.fingerprint}"

    @property
    def status(self) -> str:
        """Return ``open``, ``acknowledged`` or ``resolved``."""
        if self.resolved_at is not None:
            return "resolved"
        return "open" if self.acknowledged_at is None else "acknowledged"


class IdempotencyRecord(models.Model):
    """The first response to a request sent with an ``Idempotency-Key``, replayed for 24 h."""

    user_id = models.IntegerField()
    scope = models.CharField(max_length=100)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(default=0)
    body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user_id", "scope", "key"], name="idempotency_key_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.key} of user {self.user_id}"


# Defined in its own module; imported here so Django finds the model.
from apps.resilience.escalation_rules import EscalationRule  # noqa: E402, F401
