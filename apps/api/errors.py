"""The API's one exception handler: every error becomes ``{"error": {code, message, fields}}``.

Domain errors are mapped by their kind (the same taxonomy the handler runtime uses);
DRF's own errors keep their status; infrastructure errors a retry may cure (``classify``:
a dropped or refused database connection) are a 503. Nothing unexpected leaks a traceback.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings

from apps.api.idempotency import IdempotencyKeyReused
from apps.eventstore.exceptions import ConcurrencyConflict
from apps.resilience.classify import classify
from apps.resilience.taxonomy import BackstopError, ErrorKind, RateLimited

logger = logging.getLogger(__name__)
NON_FIELD_ERRORS = api_settings.NON_FIELD_ERRORS_KEY

_STATUS_BY_KIND = {
    ErrorKind.VALIDATION: (400, "invalid"),
    ErrorKind.NOT_FOUND: (404, "not_found"),
    ErrorKind.BUSINESS_RULE: (409, "rule_violated"),
    ErrorKind.AUTHORIZATION: (403, "forbidden"),
    ErrorKind.SECURITY: (403, "forbidden"),
    ErrorKind.RATE_LIMITED: (429, "rate_limited"),
    ErrorKind.UNAVAILABLE: (503, "unavailable"),
    ErrorKind.TRANSIENT: (503, "unavailable"),
    ErrorKind.TIMEOUT: (503, "unavailable"),
}
# Infrastructure failures (classify's kinds) the client may simply retry: a dropped or
# refused database connection during a restart or failover, the cache or a service down.
_RETRYABLE_KINDS = {ErrorKind.UNAVAILABLE, ErrorKind.TRANSIENT, ErrorKind.TIMEOUT}


def error_body(
    code: str, message: str, fields: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """Return the error shape every API error has."""
    return {"error": {"code": code, "message": message, "fields": fields or {}, **extra}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map ``exc`` to a response (DRF's ``EXCEPTION_HANDLER``)."""
    if isinstance(exc, ConcurrencyConflict):
        return Response(
            error_body(
                "conflict",
                "The resource changed since you read it.",
                current_version=exc.actual_version,
            ),
            status=status.HTTP_409_CONFLICT,
            headers={"ETag": f'"{exc.actual_version}"'},
        )
    if isinstance(exc, IdempotencyKeyReused):
        return Response(error_body("idempotency_key_reused", str(exc)), status=422)
    if isinstance(exc, BackstopError):
        return _domain(exc)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("too_large", str(exc)), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.APIException):
        return _api(exc)
    if _briefly_unavailable(exc):
        logger.warning("a dependency failed in %s: %r", context.get("view"), exc)
        message = "A service Backstop depends on is briefly unavailable; try again."
        response = Response(error_body("unavailable", message), status=503)
        # Logged above, once: not again by Django (an ERROR, mailed to the admins, per
        # request for as long as the outage lasts).
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
    logger.exception("unexpected error in %s", context.get("view"))
    return Response(error_body("server_error", "Something went wrong on our side."), status=500)


def _briefly_unavailable(exc: Exception) -> bool:
    """Whether a retry may cure ``exc``: a lost or refused database connection (SQLSTATE
    classes 08 connection, 57P operator intervention such as a terminated backend or a
    shutdown, 40 rollback such as a serialization failure; a locked SQLite file), or
    another dependency ``classify`` calls unavailable. Not a database error that would
    come back on every retry (a missing table, a full disk): that stays a 500."""
    if isinstance(exc, InterfaceError):
        return True
    if isinstance(exc, OperationalError):
        if isinstance(exc.__cause__, sqlite3.OperationalError):
            return "locked" in str(exc)
        state = str(getattr(exc.__cause__, "sqlstate", None) or "")
        # No SQLSTATE: the connection was never made or was lost before an answer.
        return not state or state[:2] in ("08", "40") or state.startswith("57P")
    if isinstance(exc, DatabaseError):
        return False
    return classify(exc).kind in _RETRYABLE_KINDS


def _domain(exc: BackstopError) -> Response:
    code_status, code = _STATUS_BY_KIND.get(exc.kind, (500, "server_error"))
    if code_status == 500:
        logger.error("domain error of kind %s reached the API: %s", exc.kind, exc)
        return Response(error_body(code, "Something went wrong on our side."), status=500)
    headers = {}
    if isinstance(exc, RateLimited) and exc.retry_after:
        headers["Retry-After"] = str(int(exc.retry_after))
    fields = getattr(exc, "fields", None)
    return Response(error_body(code, str(exc), fields), status=code_status, headers=headers)


def _api(exc: exceptions.APIException) -> Response:
    headers = {}
    auth_header = getattr(exc, "auth_header", None)  # NotAuthenticated, AuthenticationFailed
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    wait = getattr(exc, "wait", None)  # Throttled
    if wait:
        headers["Retry-After"] = str(int(wait))
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {NON_FIELD_ERRORS: exc.detail}
        fields = plain_detail(detail)
        return Response(
            error_body("invalid", invalid_message(fields), fields),
            status=exc.status_code,
            headers=headers,
        )
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else "error"
    return Response(error_body(code, str(exc.detail)), status=exc.status_code, headers=headers)


def invalid_message(fields: dict[str, Any]) -> str:
    """Return a sentence about invalid input: the messages about no one field (a wrong
    password, say) as they are, else which fields are at fault (never ``non_field_errors``)."""
    general = fields.get(NON_FIELD_ERRORS)
    if general:
        return " ".join(general) if isinstance(general, list) else str(general)
    if not fields:
        return "Invalid input."
    return "Invalid input: " + ", ".join(sorted(fields))


@csrf_exempt  # a 404 for any method: CSRF's 403 page would answer an unknown POST first
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Answer any unknown URL under /api/ with a 404 in the error shape, whatever DEBUG says
    (``handler404`` applies only without DEBUG). Answered, not raised: Django would log a
    raised 404 with its traceback."""
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def plain_detail(detail: Any) -> Any:
    """Return DRF's nested error detail as plain strings, lists and dicts."""
    if isinstance(detail, dict):
        return {str(k): plain_detail(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [plain_detail(v) for v in detail]
    return str(detail)
