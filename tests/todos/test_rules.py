"""Each todo rule has one definition, and every reader agrees with it: "overdue" in SQL and
in memory, the status values, the read model's columns, and what text is storable."""

from __future__ import annotations

import itertools
import json
import re
import uuid
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers

from apps.api.fields import TextField
from apps.api.storable import storable_str, storable_text
from apps.eventstore import projections, store
from apps.eventstore.store import CommandContext
from apps.todos import selectors, services
from apps.todos.api import rows
from apps.todos.api.filters import TodoFilter
from apps.todos.api.rows import list_row
from apps.todos.api.serializers import TodoViewSerializer, todo_output
from apps.todos.fields import PRIORITIES, InvalidTodo
from apps.todos.models import STATS_COUNTERS, TodoStats, TodoView
from apps.todos.projections import TodoRows
from apps.todos.rules import TodoStatus, is_overdue, overdue_q
from apps.todos.services import TodoState

pytestmark = pytest.mark.django_db

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.get_fixed_timezone(0))
DUE_AROUND_NOW = {
    "none": None,
    "a-day-ago": NOW - timedelta(days=1),
    "a-microsecond-ago": NOW - timedelta(microseconds=1),
    "now": NOW,
    "in-a-microsecond": NOW + timedelta(microseconds=1),
    "in-a-day": NOW + timedelta(days=1),
}
_owners = itertools.count(900_000)
_generations = itertools.count(5000)


def a_row(owner_id: int, status: str, due_at: datetime | None, **values: object) -> TodoView:
    """Return a saved TodoView row, as the projection would have written it."""
    return TodoView.objects.create(
        **{
            "generation": 1,
            "todo_id": uuid.uuid4(),
            "owner_id": owner_id,
            "title": f"{status} due {due_at}",
            "priority": "medium",
            "priority_rank": 1,
            "status": status,
            "due_at": due_at,
            "version": 1,
            "created_at": NOW - timedelta(days=30),
            "updated_at": NOW - timedelta(days=30),
            **values,
        }
    )


def every_status_and_due_date(owner_id: int) -> dict[tuple[str, str], TodoView]:
    return {
        (status, when): a_row(owner_id, status, due_at)
        for status in TodoStatus.values
        for when, due_at in DUE_AROUND_NOW.items()
    }


# -- overdue -------------------------------------------------------------------------------


def test_overdue_is_an_open_todo_due_strictly_before_now() -> None:
    rows = every_status_and_due_date(next(_owners))

    overdue = {key for key, row in rows.items() if is_overdue(row, NOW)}

    assert overdue == {("open", "a-day-ago"), ("open", "a-microsecond-ago")}


def test_the_overdue_filter_selects_exactly_the_rows_the_predicate_calls_overdue() -> None:
    owner_id = next(_owners)
    rows = every_status_and_due_date(owner_id)

    selected = set(TodoView.objects.filter(overdue_q(NOW), owner_id=owner_id))

    assert selected == {row for row in rows.values() if is_overdue(row, NOW)}
    assert len(selected) == 2


def test_every_reader_of_overdue_agrees_with_the_rule() -> None:
    owner_id = next(_owners)
    now = timezone.now()
    past, future = now - timedelta(days=1), now + timedelta(days=1)
    rows = [a_row(owner_id, s, due) for s in TodoStatus.values for due in (None, past, future)]
    expected = {row.todo_id for row in rows if is_overdue(row, now)}
    listed = selectors.todos_of(owner_id)

    assert {view.todo_id for view in listed if view.is_overdue} == expected
    assert selectors.stats_of(owner_id)["overdue"] == len(expected) == 1
    filtered = TodoFilter(data={"overdue": "true", "status": "open"}, queryset=listed).qs
    assert {view.todo_id for view in filtered} == expected
    not_overdue = TodoFilter(data={"overdue": "false", "status": "open"}, queryset=listed).qs
    assert {view.todo_id for view in not_overdue} == {
        row.todo_id for row in rows if row.status == "open"
    } - expected


@pytest.mark.parametrize(
    ("status", "due_at", "overdue"),
    [
        (TodoStatus.OPEN, timedelta(days=-1), True),
        (TodoStatus.OPEN, timedelta(days=1), False),
        (TodoStatus.OPEN, None, False),
        (TodoStatus.COMPLETED, timedelta(days=-1), False),
        (TodoStatus.DELETED, timedelta(days=-1), False),
    ],
)
def test_a_command_response_says_overdue_by_the_rule(
    status: TodoStatus, due_at: timedelta | None, overdue: bool
) -> None:
    state = TodoState(
        id=uuid.uuid4(),
        owner_id=1,
        version=1,
        title="t",
        description="",
        priority="medium",
        due_at=None if due_at is None else timezone.now() + due_at,
        tags=[],
        recurrence=None,
        series_id=None,
        status=status,
        completed_at=None,
        deleted_at=None,
    )

    assert todo_output(state, timezone.now())["is_overdue"] is overdue


# -- statuses -----------------------------------------------------------------------------


def test_the_status_values_are_the_stored_strings() -> None:
    # Rows, events' folds and API clients hold these strings: renaming one is a migration.
    assert TodoStatus.values == ["open", "completed", "deleted"]
    assert TodoView._meta.get_field("status").choices == TodoStatus.choices


def test_the_aggregate_and_the_read_model_store_the_status_values() -> None:
    owner_id = next(_owners)
    context = CommandContext(actor_id=str(owner_id))
    created = services.create_todo(owner_id=owner_id, context=context, title="Buy milk")
    done = services.complete_todo(owner_id=owner_id, todo_id=created.id, context=context)
    gone = services.delete_todo(owner_id=owner_id, todo_id=created.id, context=context)
    generation = next(_generations)
    rows, seen = TodoRows(), []
    for event in store.read_stream(created.id):
        rows.apply(event, generation)
        seen.append(TodoView.objects.get(generation=generation, todo_id=created.id).status)

    assert [created.status, done.status, gone.status] == ["open", "completed", "deleted"]
    assert seen == ["open", "completed", "deleted"]


def test_the_stats_counters_are_named_by_status_and_priority() -> None:
    assert set(STATS_COUNTERS) == {"total", *TodoStatus.values, *PRIORITIES}
    assert {f.name for f in TodoStats._meta.concrete_fields} == {
        "id",
        "generation",
        "owner_id",
        *STATS_COUNTERS,
    }


def test_the_stats_report_one_count_per_status() -> None:
    owner_id = next(_owners)
    TodoStats.objects.create(
        generation=projections.current_generation("todos"),
        owner_id=owner_id,
        total=3,
        open=2,
        completed=1,
        deleted=4,
    )

    stats = selectors.stats_of(owner_id)

    assert {s: stats[s] for s in TodoStatus.values} == {"open": 2, "completed": 1, "deleted": 4}


# -- the read model's columns ---------------------------------------------------------------


def test_the_list_reads_columns_the_model_has_and_the_annotation() -> None:
    model_fields = {f.name for f in TodoView._meta.concrete_fields}

    assert {source for _, _, source in list_row().columns} - model_fields == {"is_overdue"}


# Text the database escapes for JSON: quotes, backslashes, controls, beyond ASCII, U+2028.
AWKWARD_TEXT = 'say "hi" \\ C:\\path\n\ttab \x01 caf\u00e9 \U0001f389 \u2028 </script>'


def test_a_listed_row_renders_as_the_detail_serializer() -> None:
    owner_id = next(_owners)
    a_row(
        owner_id,
        TodoStatus.COMPLETED,
        NOW,
        description="with a receipt",
        tags=["home", "money", "caf\u00e9"],
        recurrence="FREQ=MONTHLY",
        series_id=uuid.uuid4(),
        completed_at=NOW + timedelta(microseconds=120_000),  # .120000: six digits, as Python
    )
    a_row(owner_id, TodoStatus.OPEN, None)  # every optional value null
    a_row(
        owner_id,
        TodoStatus.DELETED,
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.get_fixed_timezone(0)),
        title=AWKWARD_TEXT,
        description=AWKWARD_TEXT,
        tags=[AWKWARD_TEXT],
        deleted_at=datetime(1, 1, 1, tzinfo=timezone.get_fixed_timezone(0)),
        created_at=NOW - timedelta(microseconds=1),
    )
    a_row(owner_id, TodoStatus.OPEN, timezone.now() - timedelta(days=1))  # overdue now
    listed = selectors.todos_of(owner_id).order_by("id")

    docs = list(listed.annotate(doc=list_row()).values_list("doc", flat=True))

    expected = [dict(TodoViewSerializer(view).data) for view in listed]
    assert [json.loads(doc) for doc in docs] == expected
    assert [list(json.loads(doc)) for doc in docs] == [list(row) for row in expected]  # order
    assert [row["is_overdue"] for row in expected] == [False, False, False, True]


@pytest.mark.parametrize(
    ("name", "field", "refusal"),
    [
        ("amount", serializers.DecimalField(max_digits=5, decimal_places=2), "no JSON rendering"),
        ("due_at", serializers.DateTimeField(format="%d/%m/%Y"), "a date format"),
        ("id", serializers.UUIDField(format="hex"), "a UUID format"),
        ("it's", serializers.CharField(), "a key the rows can't name"),
    ],
)
def test_a_serializer_field_the_rows_cannot_render_is_refused(
    name: str, field: serializers.Field, refusal: str
) -> None:
    with pytest.raises(TypeError, match=refusal):
        rows._kind(name, field)


# -- storable text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "Must be a string."),
        ("a\x00b", "Must not contain NUL characters."),
        ("a\ud800b", "Contains characters that can't be stored (lone surrogates)."),
    ],
)
def test_the_api_and_the_aggregate_refuse_unstorable_text_alike(
    value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        storable_str(value)
    with pytest.raises(InvalidTodo) as refused:
        services.create_todo(
            owner_id=1, context=CommandContext(actor_id="1"), title="t", description=value
        )
    assert refused.value.fields == {"description": [message]}
    with pytest.raises(serializers.ValidationError) as invalid:
        TextField().run_validation(value)
    assert [str(error) for error in invalid.value.detail] == [message]


def test_storable_text_is_the_same_check() -> None:
    assert storable_text("Buy milk ✓")
    assert not storable_text("a\x00b")
    assert not storable_text("a\ud800b")
