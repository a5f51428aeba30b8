"""Every rule of the Todo aggregate: broken rules record nothing (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apps.resilience.taxonomy import BusinessRuleViolation
from apps.todos.aggregates import Todo
from apps.todos.fields import InvalidTodo

DUE = datetime(2026, 12, 24, 18, 0, tzinfo=UTC)


def _todo(**values: object) -> Todo:
    todo = Todo.create(owner_id=1, **{"title": "Buy milk", **values})
    todo.mark_saved()
    return todo


def _types(todo: Todo) -> list[str]:
    return [event.event_type for event in todo.pending_events()]


def test_creating_records_the_cleaned_fields() -> None:
    todo = Todo.create(
        owner_id=7,
        title="  Buy milk  ",
        description="2 litres",
        priority="high",
        due_at=DUE,
        tags=[" Home ", "errands", "home"],
    )
    assert _types(todo) == ["todo.created"]
    assert (todo.owner_id, todo.title, todo.priority, todo.due_at) == (7, "Buy milk", "high", DUE)
    assert todo.tags == ["home", "errands"]
    assert (todo.status, todo.version) == ("open", 1)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": 5}, "title"),
        ({"title": "ok", "description": "d" * 10_001}, "description"),
        ({"title": "ok", "priority": "whenever"}, "priority"),
        ({"title": "ok", "due_at": datetime(2026, 12, 24, 18, 0)}, "due_at"),
        ({"title": "ok", "due_at": "tomorrow"}, "due_at"),
        ({"title": "ok", "tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"title": "ok", "tags": ["x" * 41]}, "tags"),
        ({"title": "ok", "tags": [""]}, "tags"),
        ({"title": "ok", "tags": "home"}, "tags"),
        ({"title": "ok", "colour": "red"}, "colour"),
    ],
)
def test_an_invalid_field_is_refused_before_anything_is_recorded(values: dict, field: str) -> None:
    with pytest.raises(InvalidTodo) as refused:
        Todo.create(owner_id=1, **values)
    assert field in refused.value.fields


def test_a_title_is_required() -> None:
    with pytest.raises(InvalidTodo) as refused:
        Todo.create(owner_id=1, description="no title")
    assert refused.value.fields == {"title": ["This field is required."]}


def test_every_invalid_field_is_named_not_only_the_first() -> None:
    with pytest.raises(InvalidTodo) as refused:
        Todo.create(owner_id=1, title="", priority="nope", tags=["x" * 50])
    assert set(refused.value.fields) == {"title", "priority", "tags"}


def test_an_update_records_only_the_fields_that_changed() -> None:
    todo = _todo(priority="low")
    todo.update(title="Buy milk", priority="urgent", due_at=DUE)
    [event] = todo.pending_events()
    assert event.changes == {"priority": "urgent", "due_at": DUE.isoformat()}


def test_an_update_that_changes_nothing_records_nothing() -> None:
    todo = _todo(priority="low")
    todo.update(title="Buy milk", priority="low")
    assert todo.pending_events() == []


def test_the_due_date_can_be_cleared() -> None:
    todo = _todo(due_at=DUE)
    todo.update(due_at=None)
    assert todo.due_at is None
    assert todo.pending_events()[0].changes == {"due_at": None}


def test_completing_then_reopening() -> None:
    todo = _todo()
    todo.complete()
    assert todo.status == "completed"
    assert todo.completed_at is not None
    todo.reopen()
    assert (todo.status, todo.completed_at) == ("open", None)
    assert _types(todo) == ["todo.completed", "todo.reopened"]


@pytest.mark.parametrize(
    ("setup", "command", "message"),
    [
        (["complete"], "complete", "already completed"),
        ([], "reopen", "already open"),
        (["delete"], "complete", "deleted todo can't be completed"),
        (["delete"], "reopen", "deleted todo can't be reopened"),
        (["delete"], "delete", "already deleted"),
        ([], "restore", "only a deleted todo"),
        (["complete"], "restore", "only a deleted todo"),
    ],
)
def test_a_command_that_breaks_a_rule_records_nothing(
    setup: list[str], command: str, message: str
) -> None:
    todo = _todo()
    for step in setup:
        getattr(todo, step)()
    todo.mark_saved()
    with pytest.raises(BusinessRuleViolation, match=message):
        getattr(todo, command)()
    assert todo.pending_events() == []


def test_a_deleted_todo_cant_be_updated() -> None:
    todo = _todo()
    todo.delete()
    with pytest.raises(BusinessRuleViolation, match="deleted todo can't be changed"):
        todo.update(title="new")


def test_restoring_returns_the_status_it_had_before_deletion() -> None:
    completed = _todo()
    completed.complete()
    completed.delete()
    completed.restore()
    assert completed.status == "completed"

    opened = _todo()
    opened.delete()
    opened.restore()
    assert opened.status == "open"
