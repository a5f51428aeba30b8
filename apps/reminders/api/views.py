"""The reminders API: schedule and list a todo's reminders, snooze and cancel one.

One ViewSet, as the todos'; its routes are wired one by one in ``urls`` (they hang off two
prefixes). A plain ``ViewSet``: with no serializer of its own, an OPTIONS answer describes
the route and nothing more, as it always has.
"""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from apps.api.context import context_of
from apps.api.fields import AwareDateTimeField, StrictSerializer
from apps.api.users import request_user_id
from apps.reminders import selectors, services
from apps.reminders.aggregates import CHANNELS, SNOOZE_MINUTES
from apps.reminders.models import ReminderState


class ScheduleSerializer(StrictSerializer):
    remind_at = AwareDateTimeField()
    channels = serializers.ListField(
        child=serializers.ChoiceField(choices=CHANNELS),
        min_length=1,
        max_length=len(CHANNELS),
        default=["email"],
    )


class SnoozeSerializer(StrictSerializer):
    minutes = serializers.IntegerField(min_value=SNOOZE_MINUTES[0], max_value=SNOOZE_MINUTES[1])


class ReminderSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="reminder_id")
    todo_id = serializers.UUIDField()
    remind_at = serializers.DateTimeField()
    channels = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField()
    version = serializers.IntegerField()
    triggered_at = serializers.DateTimeField(allow_null=True)
    cancel_reason = serializers.CharField()


def reminder_response(state: ReminderState, code: int = status.HTTP_200_OK) -> Response:
    """Return the reminder's state as the API shows it."""
    return Response(ReminderSerializer(state).data, status=code)


# No docstring: it would become the OpenAPI description and the OPTIONS answer's.
class ReminderViewSet(viewsets.ViewSet):
    # Reminders of the signed-in user's todos; another user's reminder is "not found".

    @extend_schema(responses=ReminderSerializer(many=True))
    def list(self, request: Request, todo_id: uuid.UUID) -> Response:
        rows = selectors.reminders_of_todo(request_user_id(request), todo_id)
        return Response(ReminderSerializer(rows, many=True).data)

    @extend_schema(request=ScheduleSerializer, responses={201: ReminderSerializer})
    def create(self, request: Request, todo_id: uuid.UUID) -> Response:
        data = ScheduleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        state = services.schedule_reminder(
            owner_id=request_user_id(request),
            todo_id=todo_id,
            context=context_of(request),
            **data.validated_data,
        )
        return reminder_response(state, status.HTTP_201_CREATED)

    @extend_schema(request=SnoozeSerializer, responses=ReminderSerializer)
    def snooze(self, request: Request, reminder_id: uuid.UUID) -> Response:
        data = SnoozeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        state = services.snooze_reminder(
            owner_id=request_user_id(request),
            reminder_id=reminder_id,
            context=context_of(request),
            **data.validated_data,
        )
        return reminder_response(state)

    @extend_schema(request=None, responses={200: ReminderSerializer})
    def destroy(self, request: Request, reminder_id: uuid.UUID) -> Response:
        state = services.cancel_reminder(
            owner_id=request_user_id(request), reminder_id=reminder_id, context=context_of(request)
        )
        return reminder_response(state)
