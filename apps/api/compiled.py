"""Querysets compiled once per shape, their values filled in per request.

Building a queryset and compiling it to SQL costs Django about a millisecond of CPU for
the todos list, a third of the whole request. For a query whose SQL depends only on a
few choices (its *shape*: an ordering, a page size, whether a cursor is given) and whose
per-request values (an owner, the time, a cursor's position) only ever appear as
parameters, the SQL is the same every time. ``CompiledQueries`` builds such a query
once per shape with a marker value in place of each per-request value, compiles it, and
notes which parameter is which value; each later request sends that SQL with its own
values in their places.

It refuses (and every request of that shape simply runs the queryset) when a marker does
not come back as a parameter of its own (Django inlined or transformed it), when a
constant parameter equals a marker, when a selected column needs a converter from the
database (SQLite's dates do: only PostgreSQL's plain columns come back as Django would
return them), or when the row's columns are not in the queryset's ``values_list``
order. A shape whose compiling raised is not kept (logged; the next request tries
again), and at most ``MAX_SHAPES`` are. The builder must depend on nothing but its
arguments: a value it reads for itself (``timezone.now()``) would be frozen into the SQL
of the first request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from django.db import connections
from django.db.models import QuerySet
from django.db.models.query import ValuesListIterable

logger = logging.getLogger(__name__)

# Values no request sends, in range of every column type they may meet (a positive small
# integer's 0..32767; Django drops a lookup whose value overflows its column). Two sets:
# a parameter that is a value changes between them, a constant that happens to equal a
# marker does not; spaced differently, so a value the builder derives from another (an
# owner plus 3) can't pass for a third value's marker in both.
_INT_MARKERS = ((32_000, 1), (31_000, 7))
_DATETIME_MARKERS = ((datetime(1234, 5, 6, 7, 8, 9), 1), (datetime(1235, 6, 7, 8, 9, 10), 7))
# Shapes kept per CompiledQueries; past that, a new shape runs its queryset (clients choose
# the page size, so they choose how many shapes there are: 8 orderings x 200 x 2).
MAX_SHAPES = 256


def _marker(value: Any, n: int, set_: int) -> Any:
    """Return the ``n``-th marker of a set for a value of ``value``'s type; TypeError if none."""
    if type(value) is int:
        base, step = _INT_MARKERS[set_]
        return base + step * n
    if type(value) is datetime:
        moment, step = _DATETIME_MARKERS[set_]
        return moment.replace(microsecond=step * n + 1, tzinfo=UTC)
    if type(value) is str:
        return f"\x1fmarker {set_}.{n}\x1f"
    raise TypeError(f"no marker for a {type(value).__name__}")


@dataclass(frozen=True)
class _Slot:
    """A parameter of the compiled SQL: a per-request value, or a constant."""

    name: str | None  # the value's name; None: a constant
    constant: Any = None
    # What Django wrapped the value in (psycopg's Int4 for an integer column), if anything.
    wrap: Callable[[Any], Any] | None = None

    def param(self, values: Mapping[str, Any]) -> Any:
        if self.name is None:
            return self.constant
        value = values[self.name]
        return value if self.wrap is None else self.wrap(value)


def _slot(param: Any, markers: Mapping[str, Any]) -> _Slot:
    for name, marker in markers.items():
        kind = type(marker)
        if isinstance(param, kind) and not isinstance(param, bool) and param == marker:
            return _Slot(name, wrap=None if type(param) is kind else type(param))
    return _Slot(None, constant=param)


@dataclass(frozen=True)
class _Compiled:
    db: str
    sql: str
    slots: tuple[_Slot, ...]

    def rows(self, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        params = [slot.param(values) for slot in self.slots]
        connection = connections[self.db]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # psycopg's own timestamptz loader (C, with psycopg's binary package), not
                # Django's, a Python subclass that parses each value in Python and then sets
                # Django's tzinfo: a list page's 50 sort values took 17 % of a GET's time
                # under load. The same instants, in the session's time zone (UTC).
                cursor.cursor.adapters.register_loader("timestamptz", _TIMESTAMPTZ_LOADER)
            cursor.execute(self.sql, params)
            return cursor.fetchall()  # tuples already, as the queryset gives them


_TIMESTAMPTZ_LOADER = psycopg.postgres.adapters.get_loader(
    psycopg.postgres.types["timestamptz"].oid, psycopg.pq.Format.TEXT
)


def compile_shape(
    build: Callable[..., QuerySet[Any, Any]], values: Mapping[str, Any]
) -> _Compiled | None:
    """Return ``build``'s query compiled with markers for ``values``, or None if it can't be.

    Raises what building or compiling with markers raises.
    """
    try:
        first, second = (_compile(build, values, set_) for set_ in (0, 1))
    except TypeError:  # a value of a type with no marker
        return None
    if first is None or first != second:
        return None  # a value inlined or dropped, or a constant equal to a marker
    return first


def _compile(
    build: Callable[..., QuerySet[Any, Any]], values: Mapping[str, Any], set_: int
) -> _Compiled | None:
    markers = {name: _marker(value, n, set_) for n, (name, value) in enumerate(values.items())}
    queryset = build(**markers)
    query = queryset.query
    fields = getattr(queryset, "_fields", None)  # what values_list() asked for, in order
    if queryset._iterable_class is not ValuesListIterable or list(query.selected or ()) != list(
        fields or ()
    ):
        return None  # not a values_list of tuples, or its columns come back in another order
    compiler = query.get_compiler(queryset.db)
    sql, params = compiler.as_sql()
    if compiler.get_converters([column for column, _, _ in compiler.select]):
        return None
    slots = tuple(_slot(param, markers) for param in params)
    if {slot.name for slot in slots if slot.name is not None} != set(values):
        return None  # a value was inlined, transformed or dropped
    return _Compiled(queryset.db, sql, slots)


class CompiledQueries:
    """Rows of querysets by shape, each shape compiled once (see the module)."""

    def __init__(self) -> None:
        self._shapes: dict[Hashable, _Compiled | None] = {}
        self._lock = threading.Lock()

    def rows(
        self,
        shape: Hashable,
        build: Callable[..., QuerySet[Any, Any]],
        values: Mapping[str, Any],
    ) -> list[tuple[Any, ...]]:
        """Return the rows of ``build(**values)`` (a ``values_list``) as tuples.

        ``build`` must give the same SQL for every call with the same ``shape``.
        """
        with self._lock:
            known = shape in self._shapes
            compiled = self._shapes.get(shape)
            room = len(self._shapes) < MAX_SHAPES
        if not known and room:
            try:
                compiled = compile_shape(build, values)
            except Exception:  # the queryset, built with the request's values, may still run
                logger.warning("could not compile the query of shape %r", shape, exc_info=True)
            else:
                with self._lock:
                    self._shapes[shape] = compiled
        if compiled is None:
            return [tuple(row) for row in build(**values)]
        return compiled.rows(values)

    def clear(self) -> None:
        with self._lock:
            self._shapes.clear()
