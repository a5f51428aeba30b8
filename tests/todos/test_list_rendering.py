"""The list endpoint renders rows exactly as the detail serializer does (it skips DRF for speed)."""

from __future__ import annotations

import pytest

from apps.todos.api.serializers import TodoViewSerializer, view_row
from apps.todos.selectors import todos_of
from tests.support.api import Api
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]


def test_a_listed_row_equals_the_serialized_detail(alice: Api) -> None:
    todo = alice.create(
        title="Pay rent",
        description="ask for a receipt",
        priority="urgent",
        tags=["home", "money"],
        due_at="2030-02-01T09:30:00+01:00",
        recurrence="monthly",
    )
    alice.post(f"todos/{todo['id']}/complete/")
    projected(todo["id"], 2)

    view = todos_of(alice.user.pk).get(todo_id=todo["id"])

    assert view_row(view) == dict(TodoViewSerializer(view).data)
    assert alice.get("todos/", status="completed").json()["results"] == [
        dict(TodoViewSerializer(view).data)
    ]
