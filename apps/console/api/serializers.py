"""The ops API's shapes: filters, dead letters, their groups and audit, escalations."""

from __future__ import annotations

from rest_framework import serializers

from apps.api.fields import StrictSerializer, TextField
from apps.resilience.models import DeadLetter, DeadLetterAction, Escalation
from apps.resilience.taxonomy import ErrorKind, Severity

LETTER_FIELDS = [
    "id",
    "handler",
    "event_id",
    "event_type",
    "stream_type",
    "stream_id",
    "event_version",
    "kind",
    "severity",
    "exception_type",
    "message",
    "fingerprint",
    "attempts",
    "first_failed_at",
    "last_failed_at",
    "next_retry_at",
    "auto_retries",
    "status",
    "resolved_at",
    "resolution_notes",
]


class DeadLetterFilterSerializer(serializers.Serializer):
    """The list's query parameters; each one given narrows it."""

    status = serializers.ChoiceField(choices=DeadLetter.Status.choices, required=False)
    kind = serializers.ChoiceField(choices=ErrorKind.choices, required=False)
    severity = serializers.ChoiceField(choices=Severity.choices, required=False)
    handler = TextField(max_length=200, required=False)
    event_type = TextField(max_length=150, required=False)
    fingerprint = TextField(max_length=40, required=False)
    min_age_minutes = serializers.IntegerField(
        min_value=0,
        max_value=10_000_000,
        required=False,
        help_text="last failed at least this long ago",
    )


class DeadLetterSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeadLetter
        fields = LETTER_FIELDS


class DeadLetterActionSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor.username", allow_null=True, read_only=True, help_text="null: the system"
    )

    class Meta:
        model = DeadLetterAction
        fields = ["action", "actor", "notes", "details", "at"]


class DeadLetterDetailSerializer(serializers.ModelSerializer):
    actions = DeadLetterActionSerializer(many=True, read_only=True, help_text="the audit trail")

    class Meta:
        model = DeadLetter
        fields = [*LETTER_FIELDS, "payload", "edited_payload", "traceback", "actions"]


class FailureGroupSerializer(serializers.Serializer):
    fingerprint = serializers.CharField()
    kind = serializers.CharField()
    exception_type = serializers.CharField()
    count = serializers.IntegerField(help_text="open dead letters of this cause")
    handlers = serializers.IntegerField(help_text="how many handlers they failed in")
    handler = serializers.CharField(help_text="the first of those handlers, by name")
    first_seen = serializers.DateTimeField(allow_null=True)
    latest = serializers.DateTimeField(allow_null=True)
    critical = serializers.IntegerField()


class GroupOutcomeSerializer(serializers.Serializer):
    fingerprint = serializers.CharField()
    done = serializers.ListField(child=serializers.IntegerField(), help_text="letters acted on")
    skipped = serializers.ListField(
        child=serializers.IntegerField(), help_text="letters whose state forbade it"
    )
    remaining = serializers.IntegerField(
        help_text="open letters of the group this call did not reach in its time: call again"
    )


class NotesSerializer(StrictSerializer):
    notes = TextField(
        max_length=2000, allow_blank=True, required=False, help_text="why, for the log"
    )


class ReasonSerializer(StrictSerializer):
    reason = TextField(max_length=2000, help_text="why it isn't worth processing")


class EmptySerializer(StrictSerializer):
    """No fields: any given is a 400."""


class EscalationFilterSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=[("open", "open"), ("acknowledged", "acknowledged"), ("resolved", "resolved")],
        required=False,
        help_text="open: nobody acknowledged it yet",
    )


class EscalationSerializer(serializers.ModelSerializer):
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", allow_null=True, read_only=True
    )
    resolved_by = serializers.CharField(
        source="resolved_by.username", allow_null=True, read_only=True
    )

    class Meta:
        model = Escalation
        fields = [
            "id",
            "rule",
            "dead_letter",
            "fingerprint",
            "kind",
            "severity",
            "count",
            "channels",
            "created_at",
            "acknowledged_by",
            "acknowledged_at",
            "resolved_by",
            "resolved_at",
            "notes",
        ]


class BreakerSerializer(serializers.Serializer):
    name = serializers.CharField()
    state = serializers.CharField(help_text="closed, open, half_open, forced_open, forced_closed")
    generation = serializers.IntegerField()
    failures = serializers.IntegerField(help_text="failures counted in the current window")
    opened_at = serializers.DateTimeField(allow_null=True)
    next_probe_at = serializers.DateTimeField(
        allow_null=True, help_text="when an open breaker lets its first probe through"
    )


class RebuildSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="queued, running, finished, refused or failed")
    applied = serializers.IntegerField()
    total = serializers.IntegerField()


class ProjectionSerializer(serializers.Serializer):
    name = serializers.CharField()
    generation = serializers.IntegerField(source="state.generation")
    checkpoint = serializers.IntegerField(source="state.position")
    head = serializers.IntegerField(help_text="the log's last position")
    lag_events = serializers.IntegerField()
    lag_seconds = serializers.FloatField()
    rebuilding = serializers.IntegerField(
        source="state.rebuilding", allow_null=True, help_text="the generation being built"
    )
    rebuild = RebuildSerializer(allow_null=True, help_text="the latest console rebuild")
    last_error_id = serializers.IntegerField(
        source="last_error.pk", allow_null=True, help_text="its live handler's newest dead letter"
    )


class DryRunSerializer(serializers.Serializer):
    dead_letter_id = serializers.IntegerField()
    handler = serializers.CharField()
    succeeded = serializers.BooleanField()
    writes = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        help_text="rows it would have inserted, updated and deleted, by table",
    )
    events = serializers.ListField(
        child=serializers.DictField(), help_text="events it would have appended"
    )
    outbound = serializers.ListField(
        child=serializers.DictField(), help_text="email and webhooks it would have sent"
    )
    already_processed = serializers.BooleanField()
    error_kind = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)
