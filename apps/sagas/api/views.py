"""The ops API: staff see the sagas and resume or compensate one.

One ViewSet, as the other apps' APIs: reads through ``selectors``, the two commands through
``services``, whose ``SagaStateError`` (a business rule) is the API's 409 and
``SagaNotFound`` its 404. Everyone else is refused: 401 without credentials, 403 for a
signed-in user who isn't staff, whatever the saga.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.api.permissions import StaffReadOperatorsAct
from apps.api.users import request_user
from apps.sagas import selectors, services
from apps.sagas.api.pagination import NewestSagasFirst
from apps.sagas.api.serializers import (
    OperatorNotesSerializer,
    SagaDetailSerializer,
    SagaFilterSerializer,
    SagaSerializer,
)
from apps.sagas.models import SagaInstance


# No docstring on the ViewSet: it would become the OpenAPI descriptions and OPTIONS answers'.
class SagaViewSet(viewsets.GenericViewSet):
    # Every saga, newest first, fifty to a page; staff only.

    permission_classes = [StaffReadOperatorsAct]
    operator_permission = "sagas.change_sagainstance"
    serializer_class = SagaSerializer
    pagination_class = NewestSagasFirst
    lookup_field = "id"
    lookup_url_kwarg = "saga_id"
    lookup_value_converter = "uuid"
    queryset = SagaInstance.objects.none()  # the schema's model only: reads use selectors

    @extend_schema(parameters=[SagaFilterSerializer], responses=SagaSerializer(many=True))
    def list(self, request: Request) -> Response:
        filters = SagaFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        found = selectors.sagas(
            state=filters.validated_data.get("state"),
            saga_type=filters.validated_data.get("type"),
            subject_id=filters.validated_data.get("subject_id"),
        )
        page = self.paginate_queryset(found)
        assert page is not None  # pagination_class is set: every list is paginated
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(responses=SagaDetailSerializer)
    def retrieve(self, request: Request, saga_id: uuid.UUID) -> Response:
        return _detail(saga_id)

    @extend_schema(request=OperatorNotesSerializer, responses=SagaDetailSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, saga_id: uuid.UUID) -> Response:
        return _command(request, saga_id, services.resume)

    @extend_schema(request=OperatorNotesSerializer, responses=SagaDetailSerializer)
    @action(detail=True, methods=["post"])
    def compensate(self, request: Request, saga_id: uuid.UUID) -> Response:
        return _command(request, saga_id, services.compensate)


def _command(request: Request, saga_id: uuid.UUID, service: Callable[..., Any]) -> Response:
    """Run an operator's command on the saga with the request's notes; answer its detail."""
    body = OperatorNotesSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    service(saga_id, actor=request_user(request), notes=body.validated_data.get("notes", ""))
    return _detail(saga_id)


def _detail(saga_id: uuid.UUID) -> Response:
    return Response(SagaDetailSerializer(selectors.saga(saga_id)).data)
