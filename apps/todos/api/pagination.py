"""Keyset ("cursor") pagination: stable under inserts, in any of the list's orderings.

A page ends at a row; the cursor names that row's sort value and id, and the next page
starts strictly after it, so a todo created meanwhile can't shift or repeat a page.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db.models import DateTimeField, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from rest_framework import serializers
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from apps.api.compiled import CompiledQueries
from apps.api.storable import storable_offset, storable_text
from apps.todos.models import TodoView

# ordering name -> the column (or annotation) the keyset sorts on; "sort_due" is due_at
# with a missing date as NEVER, so undated todos sort after every dated one.
ORDERINGS = {
    "due_at": "sort_due",
    "created_at": "created_at",
    "priority": "priority_rank",
    "title": "title",
}
NEVER = datetime(9999, 12, 31, tzinfo=UTC)
_NON_ASCII = re.compile(r"[^\x00-\x7e]+")  # DEL too, as json.dumps escapes it


def _escaped(match: re.Match[str]) -> str:
    return json.dumps(match.group())[1:-1]


class KeysetPagination(BasePagination):
    """Pages of the todos list, each row the JSON text of its ``doc`` annotation
    (``rows.list_row``), joined into the response as it is."""

    default_ordering = "-created_at"
    page_size = 50
    max_page_size = 200

    def paginate_rows(
        self,
        request: Request,
        rows_of: Callable[..., QuerySet[TodoView]],
        values: dict[str, Any],
        compiled: CompiledQueries | None = None,
    ) -> list[tuple[Any, ...]]:
        """Return the requested page's rows as ``(id, sort value, doc)``.

        ``rows_of(**values)`` gives every row the list may show (each with a ``doc``
        annotation). With ``compiled``, the page's query is compiled once per ordering,
        page size and cursor or none (``rows_of`` must then depend on ``values`` only).
        """
        self.request = request
        self.ordering = request.query_params.get("ordering", self.default_ordering)
        descending, key = self._parse_ordering(self.ordering)
        size = self._page_size(request)
        after = self._decode(request.query_params.get("cursor"))
        beyond = "lt" if descending else "gt"
        order = [f"-{key}", "-id"] if descending else [key, "id"]

        def page(**values: Any) -> QuerySet[TodoView, tuple[Any, ...]]:
            after_value, after_id = values.pop("after_value", None), values.pop("after_id", None)
            queryset = rows_of(**values)
            if key == "sort_due":  # undated todos sort after every dated one
                queryset = queryset.annotate(
                    sort_due=Coalesce("due_at", Value(NEVER, output_field=DateTimeField()))
                )
            if after is not None:
                queryset = queryset.filter(
                    Q(**{f"{key}__{beyond}": after_value})
                    | Q(**{key: after_value, f"id__{beyond}": after_id})
                )
            return queryset.order_by(*order).values_list("id", key, "doc")[: size + 1]

        if after is not None:
            values = {**values, "after_value": after[0], "after_id": after[1]}
        shape = (self.ordering, size, after is not None)
        if compiled is None:
            rows = [tuple(row) for row in page(**values)]
        else:
            rows = compiled.rows(shape, page, values)
        self.has_next = len(rows) > size
        self.page = rows[:size]
        return self.page

    def page_response(self, page: list[Any]) -> HttpResponse:
        """Return the page as DRF's JSON renderer would, its rows' JSON joined as it is."""
        head = json.dumps(
            {"next": self._next_link(), "ordering": self.ordering}, separators=(",", ":")
        )
        body = f'{head[:-1]},"results":[{",".join(doc for _, _, doc in page)}]}}'
        if not body.isascii() or "\x7f" in body:  # as DRF's renderer (UNICODE_JSON off):
            body = _NON_ASCII.sub(_escaped, body)  # \uXXXX, in strings (only they hold it)
        return HttpResponse(body.encode(), content_type="application/json")

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "ordering": {"type": "string"},
                "results": schema,
            },
            "required": ["next", "ordering", "results"],
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        orderings = [f"{sign}{name}" for name in ORDERINGS for sign in ("", "-")]
        return [
            {
                "name": "ordering",
                "in": "query",
                "required": False,
                "description": f"sort order (default {self.default_ordering})",
                "schema": {"type": "string", "enum": orderings},
            },
            {
                "name": "page_size",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "the page after the one whose `next` link named it",
                "schema": {"type": "string"},
            },
        ]

    def _parse_ordering(self, ordering: str) -> tuple[bool, str]:
        name = ordering.removeprefix("-")
        if name not in ORDERINGS:
            raise serializers.ValidationError(
                {
                    "ordering": [
                        f"Must be one of {', '.join(ORDERINGS)}, optionally prefixed with '-'."
                    ]
                }
            )
        return ordering.startswith("-"), ORDERINGS[name]

    def _page_size(self, request: Request) -> int:
        raw = request.query_params.get("page_size")
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= self.max_page_size:
            raise serializers.ValidationError(
                {"page_size": [f"Must be from 1 to {self.max_page_size}."]}
            )
        return int(raw)

    def _next_link(self) -> str | None:
        if not self.has_next:
            return None
        last_id, value, _ = self.page[-1]  # sort_due's value: due_at, or NEVER
        token = {
            "v": value.isoformat() if isinstance(value, datetime) else value,
            "id": last_id,
            "o": self.ordering,
        }
        cursor = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
        return replace_query_param(self.request.build_absolute_uri(), "cursor", cursor)

    def _decode(self, cursor: str | None) -> tuple[Any, int] | None:
        """Return the cursor's sort value and row id; a cursor not made here is a 400."""
        if not cursor:
            return None
        try:
            token = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            if token["o"] != self.ordering:
                raise ValueError("cursor belongs to another ordering")
            return _sort_value(self.ordering.removeprefix("-"), token["v"]), int(token["id"])
        except (
            ValueError,  # also JSON and Unicode errors
            KeyError,
            TypeError,
            OverflowError,  # int(Infinity)
            RecursionError,  # JSON nested too deep to parse
            binascii.Error,
            AttributeError,
        ):
            raise serializers.ValidationError(
                {"cursor": ["Invalid cursor; start again without one."]}
            ) from None


def _sort_value(name: str, value: Any) -> Any:
    """Return a cursor's value of the ``name`` ordering as the query compares it.

    Raises ``ValueError`` or ``TypeError`` for a value the column can't be compared with
    (PostgreSQL would refuse it with an error).
    """
    if name in ("due_at", "created_at"):
        value = datetime.fromisoformat(value)
        if value.tzinfo is None or not storable_offset(value):
            raise ValueError("a cursor's date needs an offset PostgreSQL accepts")
    elif name == "priority" and type(value) is not int:
        raise TypeError("priority rank must be an integer")
    elif name == "title" and not (isinstance(value, str) and storable_text(value)):
        raise TypeError("title must be text PostgreSQL can store")
    return value
