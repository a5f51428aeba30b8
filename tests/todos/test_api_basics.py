"""The todos API end to end: command responses from the write side, reads from the read model."""

from __future__ import annotations

import pytest

from tests.support.api import Api
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]


def test_creating_returns_the_write_side_todo_and_the_read_model_follows(alice: Api) -> None:
    created = alice.create(
        title=" Water plants ", priority="high", tags=["Home"], due_at="2030-01-01T09:00:00+02:00"
    )

    assert created["version"] == 1
    assert (created["title"], created["priority"], created["tags"], created["status"]) == (
        "Water plants",
        "high",
        ["home"],
        "open",
    )
    projected(created["id"], 1)
    detail = alice.get(f"todos/{created['id']}/")
    assert detail.status_code == 200
    assert detail.json()["due_at"] == "2030-01-01T07:00:00Z"
    assert detail.headers["ETag"] == '"1"'
    listed = alice.get("todos/").json()["results"]
    assert [t["id"] for t in listed] == [created["id"]]


def test_the_life_of_a_todo(alice: Api) -> None:
    todo = alice.create()
    path = f"todos/{todo['id']}/"

    assert alice.patch(path, {"title": "Buy oat milk"}).json()["version"] == 2
    assert alice.post(path + "complete/").json()["status"] == "completed"
    assert alice.post(path + "reopen/").json()["status"] == "open"
    assert alice.delete(path).json()["status"] == "deleted"
    restored = alice.post(path + "restore/").json()
    assert (restored["status"], restored["version"]) == ("open", 6)

    projected(todo["id"], 6)
    history = alice.get(path + "events/").json()
    assert [e["type"] for e in history] == [
        "todo.created",
        "todo.updated",
        "todo.completed",
        "todo.reopened",
        "todo.deleted",
        "todo.restored",
    ]
    assert history[1]["data"] == {"changes": {"title": "Buy oat milk"}}
    assert {e["actor_id"] for e in history} == {str(alice.user.pk)}
    stats = alice.get("todos/stats/").json()
    assert (stats["total"], stats["open"], stats["completed"]) == (1, 1, 0)
