"""The list endpoint renders rows exactly as the detail serializer does (the database renders
them, apps.todos.api.rows)."""

from __future__ import annotations

import pytest

from apps.todos.api.serializers import TodoViewSerializer
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

    listed = alice.get("todos/", status="completed")
    assert listed.json()["results"] == [dict(TodoViewSerializer(view).data)]
    assert listed.headers["Content-Type"] == "application/json"
    assert listed.content.startswith(b'{"next":null,"ordering":"-created_at","results":[{"id":')


def test_a_listed_page_escapes_what_is_outside_ascii_as_the_other_endpoints_do(
    alice: Api,
) -> None:
    todo = alice.create(title="caf\u00e9 \U0001f389 \u2028 \x7f end", tags=["\u00fcber"])
    projected(todo["id"], 1)

    listed = alice.get("todos/")

    assert listed.content.isascii()
    assert b'"title":"caf\\u00e9 \\ud83c\\udf89 \\u2028 \\u007f end"' in listed.content
    assert listed.json()["results"][0]["tags"] == ["\u00fcber"]
    assert alice.get(f"todos/{todo['id']}/").content.isascii()  # DRF's own rendering
