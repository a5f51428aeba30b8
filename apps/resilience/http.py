"""The API's one exception handler: every error becomes ``{"error": {code, message, fields}}``.

Domain errors are mapped by their kind (the same taxonomy the handler runtime uses);
DRF's own errors keep their status. Nothing unexpected leaks a traceback.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.settings import api_settings

from apps.eventstore.exceptions import ConcurrencyConflict
from apps.resilience.idempotency import IdempotencyKeyReused
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
                "The todo changed since you read it.",
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
    logger.exception("unexpected error in %s", context.get("view"))
    return Response(error_body("server_error", "Something went wrong on our side."), status=500)


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
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {NON_FIELD_ERRORS: exc.detail}
        fields = _flatten(detail)
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


def _flatten(detail: Any) -> Any:
    """Return DRF's nested error detail as plain strings, lists and dicts."""
    if isinstance(detail, dict):
        return {str(k): _flatten(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [_flatten(v) for v in detail]
    return str(detail)


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


#: The deepest nesting of arrays and objects a body may have (a bulk body has 4 levels).
#: Deeper data would reach code that recurses (encoders, error rendering) near Python's
#: recursion limit; much deeper data exhausts it in the parser itself.
MAX_JSON_DEPTH = 32


class BoundedJSONParser(JSONParser):
    """JSON only, no larger than ``API_MAX_BODY_BYTES`` (a huge body is a 413, not a stall)
    and nested at most ``MAX_JSON_DEPTH`` deep (a deeper one is a 400, not a crash)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.API_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            data = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:  # the C decoder gives up at the interpreter's recursion limit
            raise _too_deep() from None
        if nested_deeper_than(data, MAX_JSON_DEPTH):
            raise _too_deep()
        return data


def _too_deep() -> exceptions.ParseError:
    return exceptions.ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels")


def nested_deeper_than(data: Any, limit: int) -> bool:
    """Return whether parsed JSON nests arrays and objects more than ``limit`` deep.

    Level by level, without recursion: the check must not fail the way it guards against.
    """
    level = [data]
    for _ in range(limit):
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
        ]
        if not level:
            return False
    return any(isinstance(node, dict | list) for node in level)


# --- The error shape in the OpenAPI schema ------------------------------------------------

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error response: a stable code, a message, per-field messages.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": True},
                "current_version": {"type": "integer", "description": "with a 409 conflict"},
            },
            "required": ["code", "message", "fields"],
        }
    },
    "required": ["error"],
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    "400": "Invalid input (`fields` names each field at fault) or an unparseable body.",
    "401": "No credentials, or invalid ones.",
    "403": "Not allowed (a session request without its CSRF token, say).",
    "404": "Not found: another user's object is the same 404 as a missing one.",
    "409": "A rule forbids the command, or `If-Match` is stale (with `current_version`).",
    "413": "The body is larger than the API takes.",
    "415": "The body is not JSON.",
    "422": "The `Idempotency-Key` was used with another body.",
    "429": "Too many requests: retry after `Retry-After` seconds.",
}
_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def document_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Add every operation's error responses to the schema (a drf-spectacular
    post-processing hook). Which errors an operation gives follows from its shape (an id in
    the path, a body, credentials), so a new endpoint's are documented without a word."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method in _HTTP_METHODS:
                responses = operation.setdefault("responses", {})
                for code in _error_statuses(path, method, operation):
                    _add_error(responses, code)
    return result


def _error_statuses(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    """Return the error statuses an operation can answer with."""
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    has_id = "{" in path
    statuses = {"429"}
    if has_body or any(p["in"] != "path" for p in parameters):
        statuses.add("400")
    security = operation.get("security", [])
    if any(security):  # credentials may be sent, and be wrong
        statuses.add("401")
    if security and {} not in security:  # no anonymous access
        statuses.add("403")
    if has_id:
        statuses.add("404")
        if method != "get":
            statuses.add("409")
    if has_body:
        statuses |= {"413", "415"}
    if any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in parameters):
        statuses.add("422")
    return sorted(statuses)


def _add_error(responses: dict[str, Any], code: str) -> None:
    """Document the error shape for ``code``, beside a body the view documents for it."""
    documented = responses.setdefault(code, {"description": _ERRORS[code]})
    media = documented.setdefault("content", {}).setdefault("application/json", {})
    schema = media.get("schema")
    if schema is None or schema == _ERROR_REF:
        media["schema"] = _ERROR_REF
    else:  # the view's own body for this status (a bulk's item errors) or the error shape
        media["schema"] = {"anyOf": [schema, _ERROR_REF]}
