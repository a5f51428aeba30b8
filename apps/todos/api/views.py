"""The todos API: each action parses, calls one service or selector, and renders."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast

from django.db.models import QuerySet
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.api import idempotency
from apps.api.compiled import CompiledQueries
from apps.api.context import context_of
from apps.api.errors import error_body, plain_detail
from apps.api.users import request_user_id
from apps.todos import selectors, services
from apps.todos.api.filters import TodoFilter, TodoFilterBackend
from apps.todos.api.pagination import KeysetPagination
from apps.todos.api.rows import list_row
from apps.todos.api.serializers import (
    BulkInputSerializer,
    BulkOutputSerializer,
    BulkRefusedSerializer,
    EventSerializer,
    HistoryQuerySerializer,
    StatsSerializer,
    TodoInputSerializer,
    TodoOutputSerializer,
    TodoViewSerializer,
    todo_output,
)
from apps.todos.models import TodoView
from apps.todos.services import TodoState

LIST_ROW = list_row()
#: Far more digits than any version has, far fewer than int() parses (4,300).
VERSION_DIGITS_MAX = 64
IF_MATCH = OpenApiParameter(
    "If-Match",
    str,
    OpenApiParameter.HEADER,
    description='the version you read, e.g. "3" (versions start at 1)',
    pattern=r'^(W/)?"?[0-9]*[1-9][0-9]*"?$',
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, description="repeat-safe key, kept 24 h"
)


def expected_version(request: Request) -> int | None:
    """Return the version pinned by ``If-Match`` (``"3"``, ``W/"3"`` or ``3``), if any."""
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not (value.isascii() and value.isdigit()) or len(value) > VERSION_DIGITS_MAX:
        raise serializers.ValidationError({"If-Match": ['Must be a version number, e.g. "3".']})
    if int(value) < 1:
        raise serializers.ValidationError({"If-Match": ["Versions start at 1."]})
    return int(value)


def state_response(state: TodoState, code: int = status.HTTP_200_OK) -> Response:
    data = todo_output(state, timezone.now())
    return Response(data, status=code, headers={"ETag": f'"{state.version}"'})


UNFILTERED_PAGES = CompiledQueries()


def _unfiltered_rows(owner_id: int, now: datetime) -> QuerySet[TodoView]:
    return TodoFilter.unfiltered(selectors.todos_of(owner_id, now)).annotate(doc=LIST_ROW)


class TodoViewSet(viewsets.GenericViewSet):
    """Todos of the signed-in user. Another user's todo is always "not found"."""

    lookup_field = "todo_id"
    lookup_value_converter = "uuid"
    serializer_class = TodoViewSerializer
    pagination_class = KeysetPagination
    filter_backends = [TodoFilterBackend]
    filterset_class = TodoFilter

    def get_queryset(self) -> QuerySet[TodoView]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular's schema: no user
            return TodoView.objects.none()
        return selectors.todos_of(request_user_id(self.request))

    @extend_schema(responses=TodoViewSerializer(many=True))
    def list(self, request: Request) -> HttpResponse:
        # Each row rendered as JSON by the query (apps.todos.api.rows), joined as it is; a
        # list without filters (most of them) runs SQL compiled once per page shape.
        paginator = cast(KeysetPagination, self.paginator)
        values = {"owner_id": request_user_id(request), "now": timezone.now()}
        if TodoFilterBackend.filters_asked(request):
            page = paginator.paginate_rows(request, self._filtered_rows, values)
        else:
            page = paginator.paginate_rows(request, _unfiltered_rows, values, UNFILTERED_PAGES)
        return paginator.page_response(page)

    def _filtered_rows(self, owner_id: int, now: datetime) -> QuerySet[TodoView]:
        rows = self.filter_queryset(selectors.todos_of(owner_id, now))
        return rows.annotate(doc=LIST_ROW)

    @extend_schema(
        request=TodoInputSerializer,
        responses={201: TodoOutputSerializer},
        parameters=[IDEMPOTENCY_KEY],
    )
    def create(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return state_response(self._create(request), status.HTTP_201_CREATED)
        if not 1 <= len(key) <= 255:
            raise serializers.ValidationError({"Idempotency-Key": ["Must be 1 to 255 characters."]})
        outcome = idempotency.run_once(
            user_id=request_user_id(request),
            scope="todos.create",
            key=key,
            digest=idempotency.request_hash(request.data),
            command=lambda: (201, todo_output(self._create(request), timezone.now())),
        )
        headers = {
            "ETag": f'"{outcome.body["version"]}"',
            "Idempotent-Replayed": str(outcome.replayed).lower(),
        }
        return Response(outcome.body, status=outcome.status, headers=headers)

    def _create(self, request: Request) -> TodoState:
        data = TodoInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return services.create_todo(
            owner_id=request_user_id(request), context=context_of(request), **data.validated_data
        )

    @extend_schema(responses=TodoViewSerializer)
    def retrieve(self, request: Request, todo_id: uuid.UUID) -> Response:
        view = selectors.todo_of(request_user_id(request), todo_id)
        return Response(TodoViewSerializer(view).data, headers={"ETag": f'"{view.version}"'})

    @extend_schema(
        request=TodoInputSerializer, responses=TodoOutputSerializer, parameters=[IF_MATCH]
    )
    def partial_update(self, request: Request, todo_id: uuid.UUID) -> Response:
        data = TodoInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        state = services.update_todo(
            owner_id=request_user_id(request),
            todo_id=todo_id,
            context=context_of(request),
            expected_version=expected_version(request),
            **data.validated_data,
        )
        return state_response(state)

    @extend_schema(request=None, responses={200: TodoOutputSerializer}, parameters=[IF_MATCH])
    def destroy(self, request: Request, todo_id: uuid.UUID) -> Response:
        return self._command(request, todo_id, services.delete_todo)

    @extend_schema(request=None, responses=TodoOutputSerializer, parameters=[IF_MATCH])
    @action(detail=True, methods=["post"])
    def complete(self, request: Request, todo_id: uuid.UUID) -> Response:
        return self._command(request, todo_id, services.complete_todo)

    @extend_schema(request=None, responses=TodoOutputSerializer, parameters=[IF_MATCH])
    @action(detail=True, methods=["post"])
    def reopen(self, request: Request, todo_id: uuid.UUID) -> Response:
        return self._command(request, todo_id, services.reopen_todo)

    @extend_schema(request=None, responses=TodoOutputSerializer, parameters=[IF_MATCH])
    @action(detail=True, methods=["post"])
    def restore(self, request: Request, todo_id: uuid.UUID) -> Response:
        return self._command(request, todo_id, services.restore_todo)

    def _command(self, request: Request, todo_id: uuid.UUID, service: Any) -> Response:
        state = service(
            owner_id=request_user_id(request),
            todo_id=todo_id,
            context=context_of(request),
            expected_version=expected_version(request),
        )
        return state_response(state)

    @extend_schema(parameters=[HistoryQuerySerializer], responses=EventSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def events(self, request: Request, todo_id: uuid.UUID) -> Response:
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        history = selectors.history_of(
            request_user_id(request), todo_id, related=query.validated_data["related"]
        )
        return Response(EventSerializer(history, many=True).data)

    @extend_schema(responses=StatsSerializer)
    @action(detail=False, methods=["get"])
    def stats(self, request: Request) -> Response:
        return Response(StatsSerializer(selectors.stats_of(request_user_id(request))).data)

    @extend_schema(
        request=BulkInputSerializer,
        responses={
            201: BulkOutputSerializer,
            207: BulkOutputSerializer,
            400: BulkRefusedSerializer,
        },
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request) -> Response:
        payload = BulkInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        atomic = payload.validated_data["mode"] == "atomic"
        items, errors = _validate_items(payload.validated_data["items"])
        results = services.bulk_create_todos(
            owner_id=request_user_id(request),
            items=[
                items.get(i, {"title": ""}) for i in range(len(payload.validated_data["items"]))
            ],
            atomic=atomic,
            context=context_of(request),
        )
        return _bulk_response(results, errors, atomic)


def _validate_items(
    raw_items: list[Any],
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Validate every item; return the valid ones' data and the invalid ones' errors, by index."""
    valid: dict[int, dict[str, Any]] = {}
    errors: dict[int, dict[str, Any]] = {}
    for index, raw in enumerate(raw_items):
        item = TodoInputSerializer(data=raw)
        if item.is_valid():
            valid[index] = item.validated_data
        else:
            errors[index] = item.errors
    return valid, errors


def _bulk_response(
    results: list[services.BulkResult], errors: dict[int, Any], atomic: bool
) -> Response:
    rows: list[dict[str, Any]] = []
    summary: Counter[str] = Counter()
    for result in results:
        item_errors = errors.get(result.index) or result.errors
        if item_errors:
            for field, messages in item_errors.items():
                for code in _codes(messages):
                    summary[f"{field}:{code}"] += 1
            rows.append(
                {"index": result.index, "status": "invalid", "errors": plain_detail(item_errors)}
            )
        elif result.todo is not None:
            rows.append(
                {
                    "index": result.index,
                    "status": "created",
                    "id": str(result.todo.id),
                    "version": result.todo.version,
                }
            )
        else:
            rows.append({"index": result.index, "status": "not_created"})
    created = sum(1 for row in rows if row["status"] == "created")
    invalid = sum(1 for row in rows if row["status"] == "invalid")
    body = {
        "mode": "atomic" if atomic else "partial",
        "created": created,
        "invalid": invalid,
        "results": rows,
        "error_summary": dict(sorted(summary.items())),
    }
    if invalid and atomic:
        return _refused(body)
    return Response(body, status=status.HTTP_207_MULTI_STATUS if invalid else 201)


def _refused(report: dict[str, Any]) -> Response:
    """Return the 400 of an atomic bulk with invalid items: the error shape, the report in it."""
    items = {str(row["index"]): row["errors"] for row in report["results"] if "errors" in row}
    message = (
        f"No todo was created: {report['invalid']} of {len(report['results'])} items "
        "are invalid (see results)."
    )
    body = error_body("invalid", message, {"items": items}, **report)
    return Response(body, status=status.HTTP_400_BAD_REQUEST)


def _codes(errors: Any) -> Iterator[str]:
    """Yield the code of every error in DRF's (possibly nested) error detail."""
    if isinstance(errors, dict):
        errors = list(errors.values())
    if isinstance(errors, list):
        for error in errors:
            yield from _codes(error)
    else:
        yield getattr(errors, "code", "invalid")
