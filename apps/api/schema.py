"""The error shape in the OpenAPI schema: a drf-spectacular post-processing hook that
documents every operation's error responses."""

from __future__ import annotations

from typing import Any

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
    "503": "A service Backstop depends on (its database, say) is briefly unavailable: retry.",
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
    statuses = {"429", "503"}
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
