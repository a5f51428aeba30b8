"""The console's ops API: dead letters (retry, resolve, discard), failure groups (retry or
resolve a whole group), escalations (acknowledge, resolve), breakers (reset, force) and
projections (rebuild).

ViewSets as the other apps' APIs: reads through ``apps.console.selectors``, commands
through the services the admin console uses, each audited with the request's user. Staff
read (401 without credentials, 403 for anyone else); a command also needs the operator's
permission (``StaffReadOperatorsAct``). A command the object's state forbids (retrying a
resolved letter, a second rebuild) is the API's 409, as every refused command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.api.pagination import NewestFirst
from apps.api.permissions import StaffReadOperatorsAct
from apps.api.users import request_user
from apps.console import selectors
from apps.console.api.serializers import (
    BreakerSerializer,
    DeadLetterDetailSerializer,
    DeadLetterFilterSerializer,
    DeadLetterSerializer,
    DryRunSerializer,
    EmptySerializer,
    EscalationFilterSerializer,
    EscalationSerializer,
    FailureGroupSerializer,
    GroupOutcomeSerializer,
    NotesSerializer,
    ProjectionSerializer,
    ReasonSerializer,
)
from apps.console.ops_admin.breakers import apply_action
from apps.console.ops_admin.projections import projection_row, request_rebuild
from apps.eventstore import projections
from apps.eventstore.models import ProjectionState
from apps.resilience.breaker_status import breaker_status, breaker_statuses, known_breakers
from apps.resilience.breakers import CircuitBreaker
from apps.resilience.models import BreakerTransition, DeadLetter, Escalation
from apps.resilience.services import dead_letters, escalation, letter_groups
from apps.resilience.services import dry_run as dry_runs
from apps.resilience.taxonomy import BusinessRuleViolation


class RefusedByState(BusinessRuleViolation):
    """The object's state forbids the command (a 409): a rebuild already under way."""


class LatestFailureFirst(NewestFirst):
    ordering = ("-last_failed_at", "-id")


# No docstrings on the ViewSets: they would become the OpenAPI descriptions.
class DeadLetterViewSet(viewsets.GenericViewSet):
    # Dead letters, latest failure first, fifty to a page; staff only.

    permission_classes = [StaffReadOperatorsAct]
    operator_permission = "resilience.change_deadletter"
    action_permissions = {"dry_run": "resilience.dry_run_deadletter"}
    serializer_class = DeadLetterSerializer
    pagination_class = LatestFailureFirst
    lookup_url_kwarg = "dead_letter_id"
    lookup_value_converter = "int"
    queryset = DeadLetter.objects.none()  # the schema's model only: reads use selectors

    @extend_schema(parameters=[DeadLetterFilterSerializer])
    def list(self, request: Request) -> Response:
        filters = DeadLetterFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = self.paginate_queryset(selectors.dead_letters(**filters.validated_data))
        assert page is not None  # pagination_class is set: every list is paginated
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(responses=DeadLetterDetailSerializer)
    def retrieve(self, request: Request, dead_letter_id: int) -> Response:
        return _letter(dead_letter_id)

    @extend_schema(request=EmptySerializer, responses=DeadLetterDetailSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, dead_letter_id: int) -> Response:
        _body(request, EmptySerializer)
        dead_letters.retry(_found(dead_letter_id), actor=request_user(request))
        return _letter(dead_letter_id)

    @extend_schema(request=NotesSerializer, responses=DeadLetterDetailSerializer)
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, dead_letter_id: int) -> Response:
        notes = _body(request, NotesSerializer).get("notes", "")
        dead_letters.resolve(_found(dead_letter_id), actor=request_user(request), notes=notes)
        return _letter(dead_letter_id)

    @extend_schema(request=ReasonSerializer, responses=DeadLetterDetailSerializer)
    @action(detail=True, methods=["post"])
    def discard(self, request: Request, dead_letter_id: int) -> Response:
        reason = _body(request, ReasonSerializer)["reason"]
        dead_letters.discard(_found(dead_letter_id), actor=request_user(request), reason=reason)
        return _letter(dead_letter_id)

    @extend_schema(request=EmptySerializer, responses=DryRunSerializer)
    @action(detail=True, methods=["post"], url_path="dry-run")
    def dry_run(self, request: Request, dead_letter_id: int) -> Response:
        """Run the letter's handler in a transaction that is rolled back; answer what it
        would have written and sent (nothing is kept, nothing goes out)."""
        _body(request, EmptySerializer)
        report = dry_runs.dry_run(_found(dead_letter_id))
        return Response(DryRunSerializer(report).data)


class FailureGroupViewSet(viewsets.GenericViewSet):
    # Open dead letters grouped by cause (fingerprint), largest group first; staff only.

    permission_classes = [StaffReadOperatorsAct]
    operator_permission = "resilience.change_deadletter"
    serializer_class = FailureGroupSerializer
    pagination_class = None
    lookup_url_kwarg = "fingerprint"
    lookup_value_converter = "str"
    queryset = DeadLetter.objects.none()

    def list(self, request: Request) -> Response:
        return Response(self.get_serializer(dead_letters.groups(), many=True).data)

    @extend_schema(request=EmptySerializer, responses=GroupOutcomeSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, fingerprint: str) -> Response:
        _body(request, EmptySerializer)
        actor = request_user(request)
        return _for_each(
            fingerprint,
            lambda pk: dead_letters.retry(pk, actor=actor),
            (DeadLetter.Status.PENDING,),
        )

    @extend_schema(request=NotesSerializer, responses=GroupOutcomeSerializer)
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, fingerprint: str) -> Response:
        notes = _body(request, NotesSerializer).get("notes", "")
        actor = request_user(request)
        return _for_each(fingerprint, lambda pk: dead_letters.resolve(pk, actor=actor, notes=notes))


class EscalationViewSet(viewsets.GenericViewSet):
    # Escalations, newest first, fifty to a page; staff only.

    permission_classes = [StaffReadOperatorsAct]
    operator_permission = "resilience.change_escalation"
    serializer_class = EscalationSerializer
    pagination_class = NewestFirst
    lookup_url_kwarg = "escalation_id"
    lookup_value_converter = "int"
    queryset = Escalation.objects.none()

    @extend_schema(parameters=[EscalationFilterSerializer])
    def list(self, request: Request) -> Response:
        filters = EscalationFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = self.paginate_queryset(selectors.escalations(**filters.validated_data))
        assert page is not None
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=NotesSerializer, responses=EscalationSerializer)
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, escalation_id: int) -> Response:
        return _escalation(request, escalation_id, escalation.acknowledge)

    @extend_schema(request=NotesSerializer, responses=EscalationSerializer)
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, escalation_id: int) -> Response:
        return _escalation(request, escalation_id, escalation.resolve)


class BreakerViewSet(viewsets.GenericViewSet):
    # Every known circuit breaker's live state, by name; staff only.

    permission_classes = [StaffReadOperatorsAct]
    operator_permission = "resilience.change_breakertransition"
    serializer_class = BreakerSerializer
    pagination_class = None
    lookup_url_kwarg = "name"
    lookup_value_converter = "str"
    queryset = BreakerTransition.objects.none()

    def list(self, request: Request) -> Response:
        return Response(self.get_serializer(breaker_statuses(), many=True).data)

    @extend_schema(request=NotesSerializer, responses=BreakerSerializer)
    @action(detail=True, methods=["post"])
    def reset(self, request: Request, name: str) -> Response:
        return _breaker(request, name, "reset")

    @extend_schema(request=NotesSerializer, responses=BreakerSerializer)
    @action(detail=True, methods=["post"], url_path="force-open")
    def force_open(self, request: Request, name: str) -> Response:
        return _breaker(request, name, "force-open")

    @extend_schema(request=NotesSerializer, responses=BreakerSerializer)
    @action(detail=True, methods=["post"], url_path="force-closed")
    def force_closed(self, request: Request, name: str) -> Response:
        return _breaker(request, name, "force-closed")


class ProjectionViewSet(viewsets.GenericViewSet):
    # Every read model's checkpoint and lag; staff only.

    permission_classes = [StaffReadOperatorsAct]
    operator_permission = "eventstore.change_projectionstate"
    serializer_class = ProjectionSerializer
    pagination_class = None
    lookup_url_kwarg = "name"
    lookup_value_converter = "str"
    queryset = ProjectionState.objects.none()

    def list(self, request: Request) -> Response:
        head = selectors.log_head()
        rows = [projection_row(name, head) for name in projections.names()]
        return Response(self.get_serializer(rows, many=True).data)

    @extend_schema(request=EmptySerializer, responses={202: ProjectionSerializer})
    @action(detail=True, methods=["post"])
    def rebuild(self, request: Request, name: str) -> Response:
        _body(request, EmptySerializer)
        if name not in projections.names():
            raise selectors.ProjectionNotFound(name)
        if not request_rebuild(name, actor=request_user(request), via="the ops API"):
            raise RefusedByState(f"{name} is already being rebuilt: wait for it to finish")
        row = projection_row(name, selectors.log_head())
        return Response(ProjectionSerializer(row).data, status=202)


def _breaker(request: Request, name: str, command: str) -> Response:
    """Reset or force breaker ``name`` as the request's user; answer its live state."""
    notes = _body(request, NotesSerializer).get("notes", "")
    if name not in known_breakers():
        raise selectors.BreakerNotFound(name)
    reason = f"{command} through the ops API" + (f": {notes}" if notes else "")
    apply_action(CircuitBreaker(name), command, actor=request_user(request), reason=reason)
    return Response(BreakerSerializer(breaker_status(name)).data)


def _body(request: Request, serializer: type[Any]) -> dict[str, Any]:
    body = serializer(data=request.data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


def _found(dead_letter_id: int) -> int:
    """Return the id of an existing dead letter; raise the API's 404 otherwise."""
    return selectors.dead_letter(dead_letter_id).pk


def _for_each(
    fingerprint: str, command: Callable[[int], Any], statuses: tuple[str, ...] = DeadLetter.OPEN
) -> Response:
    """Run ``command`` on each letter of the group in ``statuses`` (open ones), oldest
    first, for at most ``CONSOLE_GROUP_ACTION_SECONDS`` (a large group would outlast the
    web server's timeout and end as a 500 half done); report which were done, which their
    state refused (a letter changed meanwhile), and how many this call did not reach (call
    again). 404 for a group with no open letter."""
    found = selectors.open_letters_of_group(fingerprint)
    if not found:
        raise selectors.GroupNotFound(fingerprint)
    letters = [pk for pk, status in found if status in statuses]
    outcome = letter_groups.act_on(letters, command)
    refused = [
        pk for pk in letters[: len(letters) - outcome.remaining] if pk not in outcome.done_ids
    ]
    body = {
        "fingerprint": fingerprint,
        "done": outcome.done_ids,
        "skipped": refused,
        "remaining": outcome.remaining,
    }
    return Response(GroupOutcomeSerializer(body).data)


def _letter(dead_letter_id: int) -> Response:
    return Response(DeadLetterDetailSerializer(selectors.dead_letter(dead_letter_id)).data)


def _escalation(request: Request, escalation_id: int, command: Callable[..., Any]) -> Response:
    notes = _body(request, NotesSerializer).get("notes", "")
    selectors.escalation(escalation_id)  # 404 first
    command(escalation_id, actor=request_user(request), notes=notes)
    return Response(EscalationSerializer(selectors.escalation(escalation_id)).data)
