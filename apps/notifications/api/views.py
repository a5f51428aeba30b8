"""The notifications API: the user's channels (/me/) and their deliveries.

Two ViewSets, as the todos' API, wired by hand in ``urls``: /me/ is a single object with
no id, and the deliveries are a list. Reads go through ``selectors``, writes through
``services``. /me/ is a plain ``ViewSet``: with no serializer of its own, its OPTIONS
answer describes the route and nothing more, as it always has.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils.cache import add_never_cache_headers
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from apps.api.fields import StrictSerializer, TextField
from apps.api.pagination import NewestFirst
from apps.api.users import request_user, request_user_id
from apps.notifications import selectors, services
from apps.notifications.models import NotificationSettings, NotificationState
from apps.reminders.aggregates import CHANNELS

# The reminders' channels, each with where it goes: the schema's enum says so (and, its
# choices differing, names it apart from the reminders' ChannelsEnum).
_WHERE = {"email": "your account's email address", "webhook": "your webhook_url"}
COMPLETION_CHANNELS = [(channel, _WHERE[channel]) for channel in CHANNELS]


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField(help_text='where email reminders go; "" when none is set')
    webhook_url = serializers.CharField()
    webhook_secret_set = serializers.BooleanField()
    completion_channels = serializers.ListField(
        child=serializers.ChoiceField(choices=COMPLETION_CHANNELS),
        help_text="where you are told when you complete a todo; [] (the default): nowhere",
    )


class MeUpdateSerializer(StrictSerializer):
    # Django's EmailValidator; "" clears the address (and with it email reminders).
    email = serializers.EmailField(max_length=254, allow_blank=True, required=False)
    webhook_url = TextField(max_length=2000, allow_blank=True, required=False)
    rotate_webhook_secret = serializers.BooleanField(default=False)
    completion_channels = serializers.ListField(
        child=serializers.ChoiceField(choices=COMPLETION_CHANNELS),
        max_length=len(CHANNELS),
        required=False,
        help_text='each channel at most once; "webhook" needs a webhook_url',
    )

    def validate_completion_channels(self, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError("Each channel may be given only once.")
        return value


def _me(request: Request, row: NotificationSettings | None) -> dict[str, object]:
    user = request_user(request)
    return {
        "id": user.pk,
        "username": user.get_username(),
        "email": user.email,
        "webhook_url": row.webhook_url if row else "",
        "webhook_secret_set": bool(row and row.webhook_secret),
        "completion_channels": row.completion_channels if row else [],
    }


# No docstrings on the ViewSets: they would become the OpenAPI descriptions and the OPTIONS
# answers'.
class MeViewSet(viewsets.ViewSet):
    # The signed-in user and where they are notified.

    @extend_schema(responses=MeSerializer)
    def retrieve(self, request: Request) -> Response:
        row = selectors.channels_of(request_user_id(request))
        return Response(MeSerializer(_me(request, row)).data)

    @extend_schema(request=MeUpdateSerializer, responses=MeSerializer)
    def partial_update(self, request: Request) -> Response:
        data = MeUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row, secret = services.update_me(
            user_id=request_user_id(request),
            email=data.validated_data.get("email"),
            url=data.validated_data.get("webhook_url"),
            rotate_secret=data.validated_data["rotate_webhook_secret"],
            completion_channels=data.validated_data.get("completion_channels"),
        )
        request_user(request).refresh_from_db(fields=["email"])  # just changed, maybe
        body = dict(MeSerializer(_me(request, row)).data)
        if secret is not None:
            body["webhook_secret"] = secret  # shown once: sign-check X-Backstop-Signature with it
        response = Response(body)
        if secret is not None:
            add_never_cache_headers(response)  # Cache-Control: no-store; no cache keeps it
        return response


class NotificationSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="notification_id")

    class Meta:
        model = NotificationState
        fields = [
            "id",
            "channel",
            "target",
            "status",
            "attempts",
            "last_error",
            "source_type",
            "source_event_id",
            "created_at",
            "sent_at",
        ]


class NewestNotificationsFirst(NewestFirst):
    ordering = ("-created_at", "-notification_id")


class NotificationViewSet(viewsets.GenericViewSet):
    # The signed-in user's notifications, newest first, fifty to a page.

    serializer_class = NotificationSerializer
    pagination_class = NewestNotificationsFirst

    def get_queryset(self) -> QuerySet[NotificationState]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular's schema: no user
            return NotificationState.objects.none()
        return selectors.notifications_of(request_user_id(self.request))

    @extend_schema(responses=NotificationSerializer(many=True))
    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        assert page is not None  # pagination_class is set: every list is paginated
        return self.get_paginated_response(self.get_serializer(page, many=True).data)
