"""The API's one parser: JSON, bounded in size and in nesting depth."""

from __future__ import annotations

import io
from typing import Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser


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
