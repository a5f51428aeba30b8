"""Commands racing on one todo, through the API: no lost update, no double effect.

Every request runs in its own thread with its own API client and database connection,
all released together by a barrier, against the real PostgreSQL event store.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.eventstore.models import Event
from tests.support.api import Api
from tests.support.threads import run_in_threads
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

Send = Callable[[APIClient], Any]


def at_once(user: Api, sends: list[Send]) -> list[Any]:
    """Send every request as ``user`` at the same moment, each from its own client."""
    token = user.token
    start = threading.Barrier(len(sends), timeout=30)

    def send(one: Send) -> Any:
        client = APIClient()
        client.raise_request_exception = False
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        start.wait()
        return one(client)

    return [future.result() for future in run_in_threads(send, [(one,) for one in sends])]


def events_of(todo_id: str, event_type: str | None = None) -> list[Event]:
    rows = Event.objects.filter(stream_id=todo_id).order_by("version")
    return list(rows.filter(type=event_type) if event_type else rows)


def test_fifty_concurrent_completes_complete_the_todo_exactly_once(alice: Api) -> None:
    todo = alice.create()
    path = f"/api/v1/todos/{todo['id']}/complete/"

    responses = at_once(alice, [lambda client: client.post(path)] * 50)

    assert Counter(r.status_code for r in responses) == {200: 1, 409: 49}
    (won,) = [r for r in responses if r.status_code == 200]
    assert (won.json()["status"], won.json()["version"]) == ("completed", 2)
    assert won["ETag"] == '"2"'
    refused = [r.json()["error"] for r in responses if r.status_code == 409]
    assert {(e["code"], e["message"]) for e in refused} == {
        ("rule_violated", "the todo is already completed")
    }
    assert len(events_of(todo["id"], "todo.completed")) == 1
    assert [e.version for e in events_of(todo["id"])] == [1, 2]
    view = projected(todo["id"], 2)
    assert (view.status, view.version) == ("completed", 2)


def test_concurrent_unpinned_changes_all_succeed_and_none_is_lost(
    alice: Api, settings: Any
) -> None:
    titles = [f"title {i}" for i in range(7)]
    no_ops = 3  # the priority a todo already has: accepted, but nothing to record
    # A writer only loses a race to another writer's commit, so with N writers it conflicts
    # at most N - 1 times: N attempts guarantee that every unpinned change gets through.
    settings.EVENTSTORE_CONFLICT_RETRIES = len(titles) + no_ops
    todo = alice.create(title="original", priority="medium")
    path = f"/api/v1/todos/{todo['id']}/"

    def change(body: dict[str, Any]) -> Send:
        return lambda client: client.patch(path, body, format="json")

    changes = [change({"title": title}) for title in titles]
    changes += [change({"priority": "medium"})] * no_ops

    responses = at_once(alice, changes)

    assert [r.status_code for r in responses] == [200] * len(changes)
    changed_versions = sorted(r.json()["version"] for r in responses[: len(titles)])
    assert changed_versions == list(range(2, 2 + len(titles)))
    updates = events_of(todo["id"], "todo.updated")
    assert sorted(e.data["changes"]["title"] for e in updates) == sorted(titles)
    assert [e.version for e in events_of(todo["id"])] == list(range(1, 2 + len(titles)))
    final_version = 1 + len(titles)
    last_title = updates[-1].data["changes"]["title"]
    projected(todo["id"], final_version)
    detail = alice.get(f"todos/{todo['id']}/")
    assert (detail.json()["version"], detail.json()["title"], detail.json()["priority"]) == (
        final_version,
        last_title,
        "medium",
    )
    assert detail["ETag"] == f'"{final_version}"'


def test_concurrent_changes_pinned_to_the_same_version_let_exactly_one_win(alice: Api) -> None:
    todo = alice.create(title="original")
    path = f"/api/v1/todos/{todo['id']}/"
    titles = [f"title {i}" for i in range(20)]

    def change(title: str) -> Send:
        return lambda client: client.patch(
            path, {"title": title}, format="json", headers={"If-Match": '"1"'}
        )

    responses = at_once(alice, [change(title) for title in titles])

    assert Counter(r.status_code for r in responses) == {200: 1, 409: len(titles) - 1}
    (won,) = [r for r in responses if r.status_code == 200]
    assert won.json()["version"] == 2
    for response in responses:
        if response.status_code == 409:
            error = response.json()["error"]
            assert (error["code"], error["current_version"]) == ("conflict", 2)
            assert response["ETag"] == '"2"'
    (update,) = events_of(todo["id"], "todo.updated")
    assert update.version == 2
    assert update.data["changes"] == {"title": won.json()["title"]}
    view = projected(todo["id"], 2)
    assert (view.title, view.version) == (won.json()["title"], 2)


def test_concurrent_deletes_and_restores_never_record_an_impossible_transition(
    alice: Api, settings: Any
) -> None:
    todo = alice.create()
    base = f"/api/v1/todos/{todo['id']}/"
    sends: list[Send] = [lambda client: client.delete(base)] * 10
    sends += [lambda client: client.post(f"{base}restore/")] * 10
    # Up to every request may commit here; enough retries that none runs out of them.
    settings.EVENTSTORE_CONFLICT_RETRIES = len(sends)

    responses = at_once(alice, sends)

    assert {r.status_code for r in responses} <= {200, 409}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {
        "rule_violated"
    }
    types = [e.type for e in events_of(todo["id"])]
    assert len(types) == 1 + sum(r.status_code == 200 for r in responses)
    # Replaying the stream: a delete only ever follows a live todo, a restore a deleted one.
    deleted = False
    for event_type in types[1:]:
        assert event_type == ("todo.restored" if deleted else "todo.deleted")
        deleted = not deleted
    view = projected(todo["id"], len(types))
    assert view.status == ("deleted" if deleted else "open")
