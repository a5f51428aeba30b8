"""insert_rows: COPY on PostgreSQL writes exactly what bulk_create would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.forms.models import model_to_dict

from apps.eventstore.bulk import insert_rows
from apps.todos.models import TodoView

pytestmark = pytest.mark.django_db


def _view(generation: int, n: int, **values) -> TodoView:
    defaults = {
        "generation": generation,
        "todo_id": uuid.UUID(int=n),
        "owner_id": 7,
        "title": f'tab\tnew\nline \\ quote\' "{n}" é',
        "priority": "high",
        "priority_rank": 3,
        "status": "open",
        "version": 1,
        "created_at": datetime(2026, 11, 23, 18, 0, n, 123456, tzinfo=UTC),
        "updated_at": datetime(2026, 11, 23, 18, 1, n, tzinfo=UTC),
    }
    return TodoView(**{**defaults, **values})


def _rows(generation: int) -> list[dict]:
    views = TodoView.objects.filter(generation=generation).order_by("todo_id")
    return [
        {k: v for k, v in model_to_dict(view).items() if k not in ("id", "generation")}
        for view in views
    ]


def test_copied_rows_equal_bulk_created_ones_for_every_kind_of_value() -> None:
    variants = [
        {},
        {"tags": ["a", "b c", "ü"], "tags_text": "|a|b c|ü|", "due_at": None},
        {"tags": [], "recurrence": None, "series_id": None, "description": ""},
        {
            "recurrence": "FREQ=DAILY",
            "series_id": uuid.uuid4(),
            "completed_at": None,
            "due_at": datetime(2027, 1, 1, tzinfo=UTC),
        },
    ]
    insert_rows(TodoView, [_view(901, n, **v) for n, v in enumerate(variants)])
    TodoView.objects.bulk_create([_view(902, n, **v) for n, v in enumerate(variants)])

    copied = _rows(901)
    assert len(copied) == len(variants)
    assert copied == _rows(902)
    assert copied[1]["tags"] == ["a", "b c", "ü"]


def test_inserting_nothing_is_a_no_op() -> None:
    assert insert_rows(TodoView, []) == 0
    assert not TodoView.objects.filter(generation=903).exists()


def test_a_model_of_one_column_is_copied() -> None:
    from django.contrib.auth.models import Group

    assert insert_rows(Group, [Group(name="copied-1"), Group(name="copied-2")]) == 2
    assert sorted(
        Group.objects.filter(name__startswith="copied-").values_list("name", flat=True)
    ) == [
        "copied-1",
        "copied-2",
    ]
