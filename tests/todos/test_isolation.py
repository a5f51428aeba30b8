"""One user's todos are invisible to another: every attempt is the 404 of a missing todo.

Bob must not be able to read, list, count, change or even learn of the existence of
Alice's todos. Each refusal is compared with the answer for a todo that doesn't exist at
all, so the answer can't leak existence (a 409, a 403, an ETag, a different message).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from apps.eventstore.models import Event
from tests.support.api import Api
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

TODOS = "/api/v1/todos/"


def request(user: Api, method: str, path: str, **headers: str) -> Any:
    """Send ``method`` to ``path`` as ``user``, with a valid body where one is read."""
    body = {"title": "Bob was here"} if method == "patch" else None
    client = user.client
    client.raise_request_exception = False
    return getattr(client, method)(path, body, format="json", headers=headers)


def assert_same_as_missing(
    user: Api, method: str, todo_id: str, action: str = "", **headers: str
) -> Any:
    """Assert ``user`` gets exactly the 404 of a todo that doesn't exist; return it."""
    missing = str(uuid.uuid4())
    response = request(user, method, f"{TODOS}{todo_id}/{action}", **headers)
    baseline = request(user, method, f"{TODOS}{missing}/{action}", **headers)

    assert response.status_code == 404, (method, action, response.content[:500])
    assert baseline.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert json.dumps(response.json()).replace(todo_id, "<id>") == json.dumps(
        baseline.json()
    ).replace(missing, "<id>")
    assert "ETag" not in response
    assert response["Content-Type"] == baseline["Content-Type"]
    return response


def history(todo_id: str) -> list[str]:
    return list(
        Event.objects.filter(stream_id=todo_id).order_by("version").values_list("type", flat=True)
    )


def test_bob_can_not_see_change_or_learn_of_alices_todo_in_any_state(alice: Api, bob: Api) -> None:
    todo = alice.create(title="Alice's secret", tags=["private"])
    todo_id = todo["id"]
    projected(todo_id, 1)

    # Open: Bob can't read, change, complete or delete it, pinned to its version or not.
    for method, action, headers in [
        ("get", "", {}),
        ("get", "events/", {}),
        ("patch", "", {}),
        ("patch", "", {"If-Match": '"1"'}),
        ("patch", "", {"If-Match": '"7"'}),
        ("post", "complete/", {}),
        ("post", "complete/", {"If-Match": '"1"'}),
        ("delete", "", {}),
        ("delete", "", {"If-Match": '"1"'}),
        ("post", "reopen/", {}),
        ("post", "restore/", {}),
    ]:
        assert_same_as_missing(bob, method, todo_id, action, **headers)
    assert history(todo_id) == ["todo.created"]

    # Completed: Bob can't reopen it.
    assert alice.post(f"todos/{todo_id}/complete/").status_code == 200
    assert_same_as_missing(bob, "post", todo_id, "reopen/")
    assert_same_as_missing(bob, "post", todo_id, "reopen/", **{"If-Match": '"2"'})
    assert history(todo_id) == ["todo.created", "todo.completed"]

    # Deleted: Bob can't restore it (nor read it or its events).
    assert alice.delete(f"todos/{todo_id}/").status_code == 200
    projected(todo_id, 3)
    assert_same_as_missing(bob, "post", todo_id, "restore/")
    assert_same_as_missing(bob, "post", todo_id, "restore/", **{"If-Match": '"3"'})
    assert_same_as_missing(bob, "get", todo_id)
    assert_same_as_missing(bob, "get", todo_id, "events/")

    assert history(todo_id) == ["todo.created", "todo.completed", "todo.deleted"]
    # Alice, and the completion saga her completion started: never Bob.
    assert {actor for actor in Event.objects.values_list("metadata__actor_id", flat=True)} == {
        str(alice.user.pk),
        "saga:todo-completion",
    }
    mine = alice.get(f"todos/{todo_id}/")
    assert mine.status_code == 200
    assert (mine.json()["version"], mine.json()["status"], mine.json()["title"]) == (
        3,
        "deleted",
        "Alice's secret",
    )
    assert mine["ETag"] == '"3"'


def test_alice_can_not_touch_bobs_todo_either(alice: Api, bob: Api) -> None:
    todo = bob.create(title="Bob's plan")
    projected(todo["id"], 1)

    for method, action in [("get", ""), ("patch", ""), ("post", "complete/"), ("delete", "")]:
        assert_same_as_missing(alice, method, todo["id"], action)

    theirs = bob.get(f"todos/{todo['id']}/").json()
    assert (theirs["version"], theirs["status"], theirs["title"]) == (1, "open", "Bob's plan")


def final_version(user: Api, todo: dict[str, Any], *commands: str) -> int:
    """Run ``commands`` on the todo as its owner and return its version afterwards."""
    version = todo["version"]
    for command in commands:
        path = f"todos/{todo['id']}/"
        response = user.delete(path) if command == "delete" else user.post(f"{path}{command}/")
        assert response.status_code == 200, response.json()
        version = response.json()["version"]
    return version


def test_lists_and_stats_count_only_the_users_own_todos(alice: Api, bob: Api) -> None:
    past = "2020-01-01T00:00:00Z"
    alices = {
        "a-high": (alice.create(title="alice high", priority="high", tags=["shared"]), ()),
        "a-low-done": (alice.create(title="alice low", priority="low"), ("complete",)),
        "a-deleted": (alice.create(title="alice gone", priority="urgent"), ("delete",)),
        "a-overdue": (alice.create(title="alice late", priority="urgent", due_at=past), ()),
    }
    bobs = {
        "b-medium": (bob.create(title="bob medium", tags=["shared"]), ()),
        "b-overdue": (bob.create(title="bob late", priority="low", due_at=past), ()),
        "b-high-done": (bob.create(title="bob high", priority="high"), ("complete",)),
        "b-done-deleted": (bob.create(title="bob gone"), ("complete", "delete")),
        "b-reopened": (bob.create(title="bob again", priority="high"), ("complete", "reopen")),
    }
    for user, todos in ((alice, alices), (bob, bobs)):
        for todo, commands in todos.values():
            projected(todo["id"], final_version(user, todo, *commands))

    def ids(user: Api, **params: str) -> set[str]:
        response = user.get("todos/", **params)
        assert response.status_code == 200, response.json()
        return {row["id"] for row in response.json()["results"]}

    def named(todos: dict[str, Any], *names: str) -> set[str]:
        return {todos[name][0]["id"] for name in names}

    assert ids(alice) == named(alices, "a-high", "a-low-done", "a-overdue")
    assert ids(bob) == named(bobs, "b-medium", "b-overdue", "b-high-done", "b-reopened")
    assert ids(alice, status="deleted") == named(alices, "a-deleted")
    assert ids(bob, status="deleted") == named(bobs, "b-done-deleted")
    assert ids(bob, status="completed") == named(bobs, "b-high-done")
    assert ids(bob, overdue="true") == named(bobs, "b-overdue")
    assert ids(bob, tag="shared") == named(bobs, "b-medium")
    assert ids(bob, search="alice") == set()
    assert ids(bob, priority="urgent") == set()
    assert ids(alice, search="bob") == set()

    alice_stats = alice.get("todos/stats/")
    bob_stats = bob.get("todos/stats/")

    assert alice_stats.status_code == bob_stats.status_code == 200
    assert alice_stats.json() == {
        "total": 3,
        "open": 2,
        "completed": 1,
        "deleted": 1,
        "overdue": 1,
        "completion_rate": 0.3333,
        "by_priority": {"low": 1, "medium": 0, "high": 1, "urgent": 1},
    }
    assert bob_stats.json() == {
        "total": 4,
        "open": 3,
        "completed": 1,
        "deleted": 1,
        "overdue": 1,
        "completion_rate": 0.25,
        "by_priority": {"low": 1, "medium": 1, "high": 2, "urgent": 0},
    }


def test_a_user_with_no_todos_sees_an_empty_list_and_zero_stats(alice: Api, bob: Api) -> None:
    todo = alice.create(title="only alice has one")
    projected(todo["id"], 1)

    listed = bob.get("todos/")
    stats = bob.get("todos/stats/")

    assert (listed.status_code, listed.json()["results"], listed.json()["next"]) == (200, [], None)
    assert stats.json() == {
        "total": 0,
        "open": 0,
        "completed": 0,
        "deleted": 0,
        "overdue": 0,
        "completion_rate": 0.0,
        "by_priority": {"low": 0, "medium": 0, "high": 0, "urgent": 0},
    }
