"""Querysets compiled once per shape (apps.api.compiled), as the todos list uses them: each
request's own values, nothing frozen from the first, and a fallback for what can't be."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db.models import QuerySet
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from apps.api import compiled
from apps.api.compiled import CompiledQueries, compile_shape
from apps.eventstore.models import ProjectionState
from apps.todos.api.pagination import ORDERINGS, KeysetPagination
from apps.todos.api.views import _unfiltered_rows
from apps.todos.models import TodoView

pytestmark = pytest.mark.django_db

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
_owners = itertools.count(700_000)


def a_row(owner_id: int, n: int, generation: int = 1, **values: Any) -> TodoView:
    return TodoView.objects.create(
        **{
            "generation": generation,
            "todo_id": uuid.uuid4(),
            "owner_id": owner_id,
            "title": f"todo {n:02}",
            "priority": ["low", "medium", "high"][n % 3],
            "priority_rank": n % 3,
            "status": "open",
            "due_at": NOW + timedelta(days=n) if n % 2 else None,
            "version": 1,
            "created_at": NOW - timedelta(minutes=n),
            "updated_at": NOW,
            **values,
        }
    )


def page_of(owner_id: int, now: datetime) -> Any:
    def build(owner_id: int, now: datetime) -> QuerySet[TodoView, tuple[Any, ...]]:
        rows = _unfiltered_rows(owner_id, now)
        return rows.order_by("-created_at", "-id").values_list("id", "doc")[:50]

    return build


def docs(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [json.loads(row[-1]) for row in rows]


def test_a_shape_compiles_once_and_each_request_gets_its_own_values() -> None:
    alice, bob = next(_owners), next(_owners)
    alice_ids = {str(a_row(alice, n).todo_id) for n in range(3)}
    bob_ids = {str(a_row(bob, n).todo_id) for n in range(2)}
    queries = CompiledQueries()
    build = page_of(alice, NOW)

    first = queries.rows("page", build, {"owner_id": alice, "now": NOW})
    second = queries.rows("page", build, {"owner_id": bob, "now": NOW})

    assert queries._shapes["page"] is not None  # compiled: the fast path ran the second
    assert {doc["id"] for doc in docs(first)} == alice_ids
    assert {doc["id"] for doc in docs(second)} == bob_ids
    assert second == [tuple(row) for row in build(owner_id=bob, now=NOW)]


def test_the_time_is_each_requests_own() -> None:
    owner = next(_owners)
    a_row(owner, 1, due_at=NOW)
    queries = CompiledQueries()
    build = page_of(owner, NOW)

    before = queries.rows("page", build, {"owner_id": owner, "now": NOW - timedelta(seconds=1)})
    after = queries.rows("page", build, {"owner_id": owner, "now": NOW + timedelta(seconds=1)})

    assert [doc["is_overdue"] for doc in docs(before)] == [False]
    assert [doc["is_overdue"] for doc in docs(after)] == [True]


def test_a_rebuilds_switch_of_generation_is_seen_by_a_compiled_shape() -> None:
    owner = next(_owners)
    ProjectionState.objects.update_or_create(name="todos", defaults={"generation": 1})
    old = str(a_row(owner, 1, generation=1).todo_id)
    new = str(a_row(owner, 1, generation=2).todo_id)
    queries = CompiledQueries()
    values = {"owner_id": owner, "now": NOW}

    assert [doc["id"] for doc in docs(queries.rows("page", page_of(owner, NOW), values))] == [old]
    ProjectionState.objects.filter(name="todos").update(generation=2)
    assert [doc["id"] for doc in docs(queries.rows("page", page_of(owner, NOW), values))] == [new]


@pytest.mark.parametrize(
    "build",
    [
        lambda owner_id: _rows(owner_id),
        lambda owner_id: _rows(owner_id).values("id"),
        lambda owner_id: _rows(owner_id).values_list("id", flat=True),
        lambda owner_id: _rows(owner_id).values_list("id", named=True),
    ],
    ids=["instances", "dicts", "flat", "named"],
)
def test_only_a_values_list_of_tuples_compiles(build: Any) -> None:
    assert compile_shape(build, {"owner_id": 1}) is None


def test_a_value_derived_from_another_is_not_taken_for_a_third() -> None:
    def build(owner_id: int, version: int) -> QuerySet[TodoView, tuple[Any, ...]]:
        return _rows(owner_id).exclude(version=owner_id + 1).values_list("id")  # not version

    assert compile_shape(build, {"owner_id": 1, "version": 2}) is None


def test_a_shape_whose_compiling_raised_is_not_kept(caplog: pytest.LogCaptureFixture) -> None:
    owner = next(_owners)
    a_row(owner, 1)
    calls = itertools.count()
    queries = CompiledQueries()

    def build(owner_id: int) -> QuerySet[TodoView, tuple[Any, ...]]:
        if next(calls) == 0:
            raise RuntimeError("a passing failure")
        return _rows(owner_id).values_list("id")

    assert len(queries.rows("shape", build, {"owner_id": owner})) == 1  # the queryset ran
    assert "could not compile the query of shape 'shape'" in caplog.text
    assert queries._shapes == {}
    queries.rows("shape", build, {"owner_id": owner})
    assert queries._shapes["shape"] is not None  # tried again, and kept


def test_shapes_past_the_limit_run_their_querysets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "MAX_SHAPES", 2)
    owner = next(_owners)
    a_row(owner, 1)
    queries = CompiledQueries()

    def build(owner_id: int) -> QuerySet[TodoView, tuple[Any, ...]]:
        return _rows(owner_id).values_list("id")

    for shape in range(3):
        assert len(queries.rows(shape, build, {"owner_id": owner})) == 1

    assert list(queries._shapes) == [0, 1]


def test_a_constant_equal_to_a_marker_is_not_taken_for_a_value() -> None:
    def build(owner_id: int) -> QuerySet[TodoView, tuple[Any, ...]]:
        return _rows(owner_id).exclude(version=32_000).values_list("id")  # set 0's marker

    assert compile_shape(build, {"owner_id": 1}) is None


def _rows(owner_id: int) -> QuerySet[TodoView]:
    return TodoView.objects.filter(owner_id=owner_id).order_by("id")


@pytest.mark.parametrize(
    ("why", "build", "values"),
    [
        (
            "a value inlined in the SQL (a LIMIT)",
            lambda owner_id, size: _rows(owner_id).values_list("id")[:size],
            {"size": 2},
        ),
        (
            "a column Django converts (JSON)",
            lambda owner_id: _rows(owner_id).values_list("id", "tags"),
            {},
        ),
        (
            "a value with no marker (a UUID)",
            lambda owner_id, todo_id: _rows(owner_id).exclude(todo_id=todo_id).values_list("id"),
            {"todo_id": uuid.uuid4()},
        ),
    ],
)
def test_what_cannot_be_compiled_runs_as_its_queryset(why: str, build: Any, values: Any) -> None:
    owner = next(_owners)
    for n in range(3):
        a_row(owner, n, tags=["x"])
    values = {"owner_id": owner, **values}
    queries = CompiledQueries()

    assert compile_shape(build, values) is None, why
    assert queries.rows("shape", build, values) == [tuple(row) for row in build(**values)]
    assert queries._shapes == {"shape": None}


@pytest.mark.parametrize("ordering", [f"{sign}{name}" for name in ORDERINGS for sign in "-+"])
def test_compiled_pages_equal_the_querysets_in_every_ordering_and_after_a_cursor(
    ordering: str,
) -> None:
    owner = next(_owners)
    for n in range(7):
        a_row(owner, n)
    a_row(owner, 7, title="todo 03")  # equal sort values: the id breaks the tie
    queries = CompiledQueries()
    values = {"owner_id": owner, "now": NOW}

    def walk(compiled: CompiledQueries | None) -> list[list[tuple[Any, ...]]]:
        pages, params = [], {"ordering": ordering.lstrip("+"), "page_size": 3}
        while True:
            paginator = KeysetPagination()
            request = Request(APIRequestFactory().get("/api/v1/todos/", params))
            pages.append(paginator.paginate_rows(request, _unfiltered_rows, values, compiled))
            link = paginator._next_link()
            if link is None:
                return pages
            params["cursor"] = Request(APIRequestFactory().get(link)).query_params["cursor"]

    compiled_pages = walk(queries)

    assert compiled_pages == walk(None)
    assert [len(page) for page in compiled_pages] == [3, 3, 2]
    assert len(queries._shapes) == 2  # the first page's shape, and a page after a cursor
    assert None not in queries._shapes.values()
