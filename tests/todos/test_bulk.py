"""POST /api/v1/todos/bulk/: up to 1,000 todos at once, all or none (atomic) or every valid one.

Every invalid item is named with all of its field errors, and ``error_summary`` counts the
errors by ``field:code``, so a client can fix a whole batch from one response.
"""

from __future__ import annotations

from typing import Any

import pytest

from apps.eventstore.models import Event
from apps.todos.models import TodoView
from tests.support.api import Api
from tests.support.waiting import wait_until
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

# Two valid items among five invalid ones, each broken in a different way.
MIXED: list[Any] = [
    {"title": "Pay rent", "priority": "high", "tags": ["Home"]},
    {"title": ""},
    {"title": "Call mum", "due_at": "2030-01-01T09:00:00Z"},
    {"title": "   ", "priority": "someday"},  # two bad fields in one item
    {"description": "an item without a title"},
    "just a string, not an object",
    {"title": "Paint the fence", "colour": "red"},
]
MIXED_VALID = {0: "Pay rent", 2: "Call mum"}
MIXED_SUMMARY = {
    "colour:invalid": 1,
    "non_field_errors:invalid": 1,
    "priority:invalid_choice": 1,
    "title:blank": 2,
    "title:required": 1,
}


def created_events(api: Api) -> int:
    """How many todos the event store holds for ``api``'s user (the write side's truth)."""
    return Event.objects.filter(type="todo.created", data__owner_id=api.user.pk).count()


def listed_titles(api: Api) -> dict[str, str]:
    """Return id -> title of every todo the read model lists for ``api``'s user."""
    response = api.get("todos/", page_size=200)
    assert response.status_code == 200, response.json()
    return {todo["id"]: todo["title"] for todo in response.json()["results"]}


def assert_invalid_items_reported(results: list[dict[str, Any]]) -> None:
    """Every invalid item of ``MIXED`` is named with every one of its field errors."""
    invalid = {row["index"]: row for row in results if row["status"] == "invalid"}
    assert sorted(invalid) == [1, 3, 4, 5, 6]
    assert set(invalid[1]["errors"]) == {"title"}
    assert set(invalid[3]["errors"]) == {"title", "priority"}
    assert set(invalid[4]["errors"]) == {"title"}
    assert set(invalid[5]["errors"]) == {"non_field_errors"}
    assert set(invalid[6]["errors"]) == {"colour"}
    for row in invalid.values():
        assert "id" not in row
        for messages in row["errors"].values():
            assert messages
            assert all(isinstance(message, str) and message for message in messages)


def test_atomic_with_an_invalid_item_creates_nothing_and_reports_every_invalid_item(
    alice: Api,
) -> None:
    response = alice.post("todos/bulk/", {"mode": "atomic", "items": MIXED})

    assert response.status_code == 400, response.json()
    body = response.json()["error"]  # the error shape, with the report in it
    assert body["code"] == "invalid"
    assert body["message"] == "No todo was created: 5 of 7 items are invalid (see results)."
    assert body["fields"] == {
        "items": {str(row["index"]): row["errors"] for row in body["results"] if "errors" in row}
    }
    assert len(body["fields"]["items"]) == 5
    assert (body["mode"], body["created"], body["invalid"]) == ("atomic", 0, 5)
    assert [row["index"] for row in body["results"]] == list(range(len(MIXED)))
    assert_invalid_items_reported(body["results"])
    not_created = [row for row in body["results"] if row["status"] == "not_created"]
    assert [row["index"] for row in not_created] == sorted(MIXED_VALID)
    assert all("id" not in row for row in not_created)
    assert body["error_summary"] == MIXED_SUMMARY
    assert created_events(alice) == 0


def test_atomic_with_only_valid_items_creates_them_all_in_order(alice: Api) -> None:
    items = [
        {"title": f"Chore {n}", "priority": priority}
        for n, priority in enumerate(["low", "medium", "high", "urgent", "medium"])
    ]

    response = alice.post("todos/bulk/", {"mode": "atomic", "items": items})

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["mode"], body["created"], body["invalid"]) == ("atomic", 5, 0)
    assert body["error_summary"] == {}
    results = body["results"]
    assert [(row["index"], row["status"], row["version"]) for row in results] == [
        (n, "created", 1) for n in range(5)
    ]
    assert len({row["id"] for row in results}) == 5
    assert created_events(alice) == 5
    for row in results:
        projected(row["id"], 1)
    assert listed_titles(alice) == {row["id"]: f"Chore {row['index']}" for row in results}
    priorities = dict(
        TodoView.objects.filter(owner_id=alice.user.pk).values_list("title", "priority")
    )
    assert priorities == {item["title"]: item["priority"] for item in items}


def test_mode_defaults_to_atomic(alice: Api) -> None:
    response = alice.post("todos/bulk/", {"items": [{"title": "Fine"}, {"title": ""}]})

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["mode"] == "atomic"
    assert [row["status"] for row in response.json()["error"]["results"]] == [
        "not_created",
        "invalid",
    ]
    assert created_events(alice) == 0


def test_partial_creates_the_valid_items_and_reports_the_invalid_ones(alice: Api) -> None:
    response = alice.post("todos/bulk/", {"mode": "partial", "items": MIXED})

    assert response.status_code == 207, response.json()
    body = response.json()
    assert (body["mode"], body["created"], body["invalid"]) == ("partial", 2, 5)
    assert [row["index"] for row in body["results"]] == list(range(len(MIXED)))
    assert_invalid_items_reported(body["results"])
    created = {row["index"]: row for row in body["results"] if row["status"] == "created"}
    assert sorted(created) == sorted(MIXED_VALID)
    assert all(row["version"] == 1 for row in created.values())
    assert body["error_summary"] == MIXED_SUMMARY
    assert created_events(alice) == len(MIXED_VALID)
    for row in created.values():
        projected(row["id"], 1)
    assert listed_titles(alice) == {row["id"]: MIXED_VALID[index] for index, row in created.items()}


def test_partial_with_only_invalid_items_creates_nothing(alice: Api) -> None:
    response = alice.post("todos/bulk/", {"mode": "partial", "items": [{"title": ""}, 42]})

    assert response.status_code == 207, response.json()
    body = response.json()
    assert (body["created"], body["invalid"]) == (0, 2)
    assert body["error_summary"] == {"non_field_errors:invalid": 1, "title:blank": 1}
    assert created_events(alice) == 0


def test_a_nested_field_error_is_summarised_by_its_own_code(alice: Api) -> None:
    too_long = "t" * 41

    response = alice.post(
        "todos/bulk/",
        {"mode": "partial", "items": [{"title": "Tagged", "tags": ["ok", too_long]}]},
    )

    assert response.status_code == 207, response.json()
    body = response.json()
    assert body["results"][0]["status"] == "invalid"
    assert "tags" in body["results"][0]["errors"]
    assert body["error_summary"] == {"tags:max_length": 1}
    assert created_events(alice) == 0


def test_a_thousand_items_are_accepted(alice: Api) -> None:
    items = [{"title": f"Item {n}"} for n in range(1000)]

    response = alice.post("todos/bulk/", {"mode": "atomic", "items": items})

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["created"], body["invalid"], len(body["results"])) == (1000, 0, 1000)
    assert [row["index"] for row in body["results"]] == list(range(1000))
    assert created_events(alice) == 1000
    # Let the read model catch up here, so the worker is idle when the next test starts.
    wait_until(
        lambda: TodoView.objects.filter(owner_id=alice.user.pk).count() == 1000,
        timeout=60,
        interval=0.2,
        message="1,000 todos in the read model",
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param(
            {"mode": "partial", "items": [{"title": f"Item {n}"} for n in range(1001)]},
            "items",
            id="1001-items",
        ),
        pytest.param({"mode": "atomic", "items": []}, "items", id="no-items"),
        pytest.param({"mode": "atomic"}, "items", id="items-missing"),
        pytest.param({"mode": "atomic", "items": {"title": "x"}}, "items", id="items-not-a-list"),
        pytest.param({"mode": "sometimes", "items": [{"title": "x"}]}, "mode", id="unknown-mode"),
        pytest.param(
            {"mode": "atomic", "items": [{"title": "x"}], "dry_run": True},
            "dry_run",
            id="unknown-field",
        ),
    ],
)
def test_a_malformed_request_is_refused_as_a_whole_and_names_the_field(
    alice: Api, payload: dict[str, Any], field: str
) -> None:
    response = alice.post("todos/bulk/", payload)

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert created_events(alice) == 0


def test_bulk_todos_belong_to_the_caller_only(alice: Api, bob: Api) -> None:
    response = alice.post("todos/bulk/", {"mode": "atomic", "items": [{"title": "Mine"}]})
    assert response.status_code == 201, response.json()
    todo_id = response.json()["results"][0]["id"]
    projected(todo_id, 1)

    assert created_events(bob) == 0
    assert bob.get(f"todos/{todo_id}/").status_code == 404
    assert listed_titles(bob) == {}
    assert listed_titles(alice) == {todo_id: "Mine"}
