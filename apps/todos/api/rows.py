"""Rows of ``GET /api/v1/todos/`` rendered as JSON text by the database.

The list is the API's busiest read. Decoding fifty rows into Python values (dates, UUIDs,
a JSON column) and encoding them again for the response cost more of a request than the
query did. Instead the query renders each row as the JSON object ``TodoViewSerializer``
would give, field for field and in its order, and the page joins the rows as text:

- dates in UTC with ``Z``, with microseconds only when there are some (Python's
  ``isoformat``, as DRF renders them);
- UUIDs as hyphenated lower-case text, texts as JSON strings (escaped by the database;
  the page escapes what is outside ASCII as ``\\uXXXX``, as DRF's renderer does), the
  tags as stored, ``is_overdue`` as ``true`` or ``false``.

PostgreSQL and SQLite (the embedded default) each have their SQL; the fields and their
order come from the serializer, so a field added there is rendered here, or refused at
import when its type has no rendering (``ROW_KINDS``) or it asks for a format of its own.
The page is always compact JSON (DRF's ``indent`` media-type parameter is not offered).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import NotSupportedError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Func, TextField
from django.db.models.sql.compiler import SQLCompiler
from rest_framework import ISO_8601, serializers
from rest_framework.fields import empty

from apps.todos.api.serializers import TodoViewSerializer

# The JSON of a non-null value, per database; {v} is the value's SQL ("%%": a "%" in a
# query Django sends with parameters). SQLite keeps UUIDs as 32 hex digits and dates as
# "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC (Django's storage).
_UUID_SQLITE = (
    "'\"' || substr({v}, 1, 8) || '-' || substr({v}, 9, 4) || '-' || substr({v}, 13, 4)"
    " || '-' || substr({v}, 17, 4) || '-' || substr({v}, 21) || '\"'"
)
_DATETIME_POSTGRESQL = (
    "'\"' || to_char({v} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN extract(microseconds FROM {v}) %% 1000000 = 0 THEN ''"
    " ELSE to_char({v} AT TIME ZONE 'UTC', '.US') END || 'Z\"'"
)
_RENDER = {
    "text": {"postgresql": "to_json({v})::text", "sqlite": "json_quote({v})"},
    "int": {"postgresql": "({v})::text", "sqlite": "CAST({v} AS TEXT)"},
    "bool": {
        "postgresql": "CASE WHEN {v} THEN 'true' ELSE 'false' END",
        "sqlite": "CASE WHEN {v} THEN 'true' ELSE 'false' END",
    },
    "uuid": {"postgresql": "'\"' || ({v})::text || '\"'", "sqlite": _UUID_SQLITE},
    "json": {"postgresql": "({v})::text", "sqlite": "{v}"},
    "datetime": {
        "postgresql": _DATETIME_POSTGRESQL,
        "sqlite": "'\"' || replace({v}, ' ', 'T') || 'Z\"'",
    },
}
# Serializer field class -> how its value is rendered (the most specific class first).
ROW_KINDS: list[tuple[type[serializers.Field], str]] = [
    (serializers.DateTimeField, "datetime"),
    (serializers.UUIDField, "uuid"),
    (serializers.ListField, "json"),
    (serializers.BooleanField, "bool"),
    (serializers.IntegerField, "int"),
    (serializers.CharField, "text"),
]


def _kind(name: str, field: serializers.Field) -> str:
    """Return how ``field`` is rendered; TypeError for a field it can't be, or an option
    (a date or UUID format of its own) the rendering doesn't follow."""
    if not name.isidentifier():  # the key goes into the SQL as a literal
        raise TypeError(f"TodoViewSerializer.{name}: a key the rows can't name")
    if getattr(field, "format", empty) not in (empty, ISO_8601):
        raise TypeError(f"TodoViewSerializer.{name}: a date format the rows don't render")
    if getattr(field, "uuid_format", "hex_verbose") != "hex_verbose":
        raise TypeError(f"TodoViewSerializer.{name}: a UUID format the rows don't render")
    for field_class, kind in ROW_KINDS:
        if isinstance(field, field_class):
            return kind
    raise TypeError(f"TodoViewSerializer.{name}: no JSON rendering for {type(field).__name__}")


class RowJSON(Func):
    """One row as the JSON text of ``columns``: (key, kind, model field or annotation)."""

    output_field = TextField()

    def __init__(self, columns: tuple[tuple[str, str, str], ...]) -> None:
        self.columns = columns
        super().__init__(*(F(source) for _, _, source in columns))

    def _render(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, vendor: str
    ) -> tuple[str, tuple[Any, ...]]:
        pieces: list[str] = []
        params: list[Any] = []
        for n, ((key, kind, _), expression) in enumerate(
            zip(self.columns, self.get_source_expressions(), strict=True)
        ):
            sql, value_params = compiler.compile(expression)
            template = _RENDER[kind][vendor]
            label = ("{" if n == 0 else ",") + json.dumps(key) + ":"
            pieces.append(f"'{label}'")
            pieces.append(f"coalesce({template.replace('{v}', sql)}, 'null')")
            params += list(value_params) * template.count("{v}")
        pieces.append("'}'")
        return "(" + " || ".join(pieces) + ")", tuple(params)

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, tuple[Any, ...]]:
        return self._render(compiler, connection, "postgresql")

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, tuple[Any, ...]]:
        return self._render(compiler, connection, "sqlite")

    def as_sql(  # type: ignore[override]
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, tuple[Any, ...]]:
        raise NotSupportedError(f"todo list rows are not rendered on {connection.vendor}")


def list_row() -> RowJSON:
    """Return the expression rendering a ``selectors.todos_of`` row as its list JSON."""
    if settings.TIME_ZONE != "UTC":  # DRF renders dates in the current time zone
        raise ImproperlyConfigured("the todo list's rows render dates in UTC: TIME_ZONE='UTC'")
    fields = TodoViewSerializer().fields
    return RowJSON(
        tuple((name, _kind(name, field), field.source or name) for name, field in fields.items())
    )
