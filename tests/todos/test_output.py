"""A command's response is what ``TodoOutputSerializer`` (the schema's shape) would write."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from rest_framework.renderers import JSONRenderer

from apps.todos.api.serializers import TodoOutputSerializer, todo_output
from apps.todos.rules import TodoStatus, is_overdue
from apps.todos.services import TodoState

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def _state(**values: object) -> TodoState:
    defaults: dict[str, object] = {
        "id": uuid.uuid4(),
        "owner_id": 1,
        "version": 3,
        "title": "Pay rent",
        "description": "",
        "priority": "medium",
        "due_at": None,
        "tags": [],
        "recurrence": None,
        "series_id": None,
        "status": TodoStatus.OPEN,
        "completed_at": None,
        "deleted_at": None,
    }
    return TodoState(**{**defaults, **values})  # type: ignore[arg-type]


STATES = {
    "plain": {},
    "due-in-the-past": {"due_at": NOW - timedelta(days=1, microseconds=5)},
    "due-in-another-zone": {"due_at": datetime(2030, 6, 2, 9, 30, tzinfo=PLUS_TWO)},
    "tags-and-text": {
        "title": 'tab\there "quoted" é ☃',
        "description": "line\nbreak",
        "tags": ["home", "ü", "two words"],
        "priority": "high",
    },
    "recurring": {"recurrence": "FREQ=WEEKLY;BYDAY=MO", "series_id": uuid.uuid4()},
    "completed": {"status": TodoStatus.COMPLETED, "completed_at": NOW, "due_at": NOW},
    "deleted": {
        "status": TodoStatus.DELETED,
        "deleted_at": datetime(2030, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "completed_at": NOW - timedelta(hours=1),
    },
}


@pytest.mark.parametrize("values", STATES.values(), ids=STATES.keys())
def test_the_output_is_the_serializers(values: dict[str, object]) -> None:
    state = _state(**values)
    by_serializer = TodoOutputSerializer(
        {**state.__dict__, "is_overdue": is_overdue(state, NOW)}
    ).data

    built = todo_output(state, NOW)

    assert built == by_serializer
    assert list(built) == list(by_serializer)  # the same key order in the body
    assert JSONRenderer().render(built) == JSONRenderer().render(by_serializer)
    assert json.loads(JSONRenderer().render(built))["id"] == str(state.id)


def test_an_open_todo_past_its_due_time_is_overdue_in_the_output() -> None:
    assert todo_output(_state(**STATES["due-in-the-past"]), NOW)["is_overdue"] is True
    assert todo_output(_state(**STATES["completed"]), NOW)["is_overdue"] is False
