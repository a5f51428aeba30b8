"""The ops API's shapes: the list's filters, a saga, its step log and operator actions."""

from __future__ import annotations

from rest_framework import serializers

from apps.api.fields import StrictSerializer, TextField
from apps.sagas.models import SagaAction, SagaInstance, SagaStep

SAGA_FIELDS = [
    "id",
    "type",
    "state",
    "correlation_id",
    "trigger_event_id",
    "subject_id",
    "current_step",
    "deadline",
    "last_error",
    "created_at",
    "updated_at",
    "finished_at",
]


class SagaFilterSerializer(serializers.Serializer):
    """The list's query parameters; each one given narrows it."""

    state = serializers.ChoiceField(choices=SagaInstance.State.choices, required=False)
    type = TextField(max_length=100, required=False, help_text="a saga type, e.g. todo-completion")
    subject_id = serializers.UUIDField(required=False, help_text="what it works on (a todo's id)")


class SagaSerializer(serializers.ModelSerializer):
    class Meta:
        model = SagaInstance
        fields = SAGA_FIELDS


class SagaStepSerializer(serializers.ModelSerializer):
    class Meta:
        model = SagaStep
        fields = [
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


class SagaActionSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor.username", allow_null=True, read_only=True, help_text="null: no user"
    )

    class Meta:
        model = SagaAction
        fields = ["action", "actor", "notes", "created_at"]


class SagaDetailSerializer(serializers.ModelSerializer):
    steps = SagaStepSerializer(many=True, read_only=True, help_text="the step log, in order")
    actions = SagaActionSerializer(many=True, read_only=True, help_text="what operators did")

    class Meta:
        model = SagaInstance
        fields = [*SAGA_FIELDS, "context", "steps", "actions"]


class OperatorNotesSerializer(StrictSerializer):
    notes = TextField(
        max_length=2000, allow_blank=True, required=False, help_text="why, for the log"
    )
