"""GET /api/v1/todos/ and /stats/: filters, orderings, cursor pages and counts, all from the
read model. Every todo a test creates or changes is waited for there before the test lists.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.utils import timezone

from tests.support.api import Api
from tests.support.waiting import wait_until
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

PAST = "2020-01-01T09:00:00Z"
FUTURE = "2099-01-01T09:00:00Z"
ORDERINGS = ("due_at", "created_at", "priority", "title")


def make(api: Api, title: str, **fields: Any) -> str:
    """Create a todo, wait for the read model to have it, and return its id."""
    todo = api.create(title=title, **fields)
    projected(todo["id"], todo["version"])
    return todo["id"]


def command(api: Api, todo_id: str, action: str) -> None:
    """Run ``complete``/``reopen``/``restore``/``delete`` and wait for the read model."""
    path = f"todos/{todo_id}/"
    response = api.delete(path) if action == "delete" else api.post(f"{path}{action}/")
    assert response.status_code == 200, response.json()
    projected(todo_id, response.json()["version"])


def listing(api: Api, **params: Any) -> list[dict[str, Any]]:
    response = api.get("todos/", page_size=200, **params)
    assert response.status_code == 200, response.json()
    assert response.json()["next"] is None
    return response.json()["results"]


def ids(api: Api, **params: Any) -> list[str]:
    return [todo["id"] for todo in listing(api, **params)]


def id_set(api: Api, **params: Any) -> set[str]:
    found = ids(api, **params)
    assert len(found) == len(set(found))
    return set(found)


def walk(api: Api, **params: Any) -> list[list[str]]:
    """Follow the ``next`` links from the first page; return each page's ids."""
    response = api.get("todos/", **params)
    pages = []
    while True:
        assert response.status_code == 200, response.json()
        body = response.json()
        pages.append([todo["id"] for todo in body["results"]])
        if body["next"] is None:
            return pages
        assert len(pages) < 50, "the pages never end"
        response = api.client.get(body["next"])


# -- filters ---------------------------------------------------------------------------------


def test_the_status_filter_and_deleted_todos_are_hidden_unless_asked_for(alice: Api) -> None:
    open_id = make(alice, "Still to do")
    done_id = make(alice, "Done already")
    command(alice, done_id, "complete")
    gone_id = make(alice, "Thrown away")
    command(alice, gone_id, "delete")

    assert id_set(alice) == {open_id, done_id}
    assert id_set(alice, status="open") == {open_id}
    assert id_set(alice, status="completed") == {done_id}
    assert id_set(alice, status="deleted") == {gone_id}
    assert alice.get("todos/", status="archived").status_code == 400


def test_the_priority_filter(alice: Api) -> None:
    low = make(alice, "Someday", priority="low")
    urgent = make(alice, "Now", priority="urgent")
    medium = make(alice, "Default priority")

    assert id_set(alice, priority="urgent") == {urgent}
    assert id_set(alice, priority="low") == {low}
    assert id_set(alice, priority="medium") == {medium}
    assert id_set(alice, priority="high") == set()
    assert alice.get("todos/", priority="critical").status_code == 400


def test_the_tag_filter_matches_whole_tags_case_insensitively(alice: Api) -> None:
    work = make(alice, "Report", tags=["Work", "q3"])
    homework = make(alice, "Maths", tags=["homework"])
    both = make(alice, "Commute", tags=["WORK", "travel"])
    make(alice, "Untagged")

    assert id_set(alice, tag="work") == {work, both}
    assert id_set(alice, tag="WoRk") == {work, both}
    assert id_set(alice, tag=" Work ") == {work, both}
    assert id_set(alice, tag="homework") == {homework}
    assert id_set(alice, tag="wor") == set()
    assert id_set(alice, tag="q3") == {work}


def test_a_tag_filter_never_matches_part_of_another_tag(alice: Api) -> None:
    """A tag holding the separator of ``tags_text`` ("|") must not make a shorter tag match.

    Refusing such a tag outright would be correct too.
    """
    plain = make(alice, "Plain tag", tags=["work"])
    response = alice.post("todos/", {"title": "Odd tag", "tags": ["home|work"]})
    if response.status_code == 400:
        assert "tags" in response.json()["error"]["fields"]
        assert id_set(alice, tag="work") == {plain}
        return
    assert response.status_code == 201, response.json()
    piped = response.json()["id"]
    projected(piped, 1)

    assert id_set(alice, tag="work") == {plain}
    assert id_set(alice, tag="home") == set()
    assert id_set(alice, tag="home|work") == {piped}


def test_the_due_before_and_due_after_filters(alice: Api) -> None:
    january = make(alice, "January", due_at="2030-01-15T12:00:00Z")
    june_first = make(alice, "June first", due_at="2030-06-01T00:00:00Z")
    december = make(alice, "December", due_at="2030-12-24T18:00:00+01:00")
    make(alice, "Whenever")

    assert id_set(alice, due_before="2030-06-01T00:00:00Z") == {january}
    assert id_set(alice, due_after="2030-06-01T00:00:00Z") == {june_first, december}
    assert id_set(alice, due_after="2030-01-01T00:00:00Z", due_before="2030-12-24T17:00:00Z") == {
        january,
        june_first,
    }
    assert id_set(alice, due_after="2030-12-24T17:00:00Z") == {december}
    assert alice.get("todos/", due_before="next tuesday").status_code == 400


def test_the_overdue_filter_means_due_in_the_past_and_open(alice: Api) -> None:
    late = make(alice, "Late", due_at=PAST)
    late_but_done = make(alice, "Late but done", due_at=PAST)
    command(alice, late_but_done, "complete")
    late_and_deleted = make(alice, "Late and deleted", due_at=PAST)
    command(alice, late_and_deleted, "delete")
    upcoming = make(alice, "Upcoming", due_at=FUTURE)
    undated = make(alice, "Undated")

    assert id_set(alice, overdue="true") == {late}
    assert id_set(alice, overdue="false") == {late_but_done, upcoming, undated}
    assert id_set(alice, overdue="true", status="deleted") == set()
    assert id_set(alice, overdue="false", status="deleted") == {late_and_deleted}


def test_search_matches_every_word_in_title_or_description_case_insensitively(
    alice: Api,
) -> None:
    milk = make(alice, "Buy OAT milk", description="From the corner store")
    dog = make(alice, "Walk the dog", description="Take the milk-free treats")
    make(alice, "Call the bank")

    assert id_set(alice, search="milk") == {milk, dog}
    assert id_set(alice, search="MILK Store") == {milk}
    assert id_set(alice, search="oat corner") == {milk}
    assert id_set(alice, search="  treats   WALK ") == {dog}
    assert id_set(alice, search="oat dog") == set()
    assert id_set(alice, search="the") == id_set(alice)


def test_filters_combine(alice: Api) -> None:
    wanted = make(alice, "Pay the invoice", priority="high", tags=["work"], due_at=PAST)
    make(alice, "Pay the rent", priority="high", tags=["home"], due_at=PAST)
    make(alice, "Pay the supplier", priority="low", tags=["work"], due_at=PAST)
    make(alice, "Pay the taxes", priority="high", tags=["work"], due_at=FUTURE)

    assert id_set(alice, search="pay", priority="high", tag="work", overdue="true") == {wanted}


def test_the_list_holds_only_the_callers_todos(alice: Api, bob: Api) -> None:
    hers = make(alice, "Hers")
    his = make(bob, "His")

    assert id_set(alice) == {hers}
    assert id_set(bob) == {his}


# -- ordering --------------------------------------------------------------------------------


@pytest.fixture
def five(alice: Api) -> dict[str, str]:
    """Five todos whose orders by creation, due date, priority and title all differ."""
    return {
        "cherry": make(alice, "cherry", priority="urgent", due_at="2030-03-01T00:00:00Z"),
        "apple": make(alice, "apple", priority="medium"),
        "date": make(alice, "date", priority="low", due_at="2030-01-01T00:00:00Z"),
        "banana": make(alice, "banana", priority="high", due_at="2030-02-01T00:00:00Z"),
        "elder": make(alice, "elder", priority="medium"),
    }


# Ascending orders of ``five`` (ties are broken by the order the rows were written).
EXPECTED = {
    "created_at": ["cherry", "apple", "date", "banana", "elder"],
    "due_at": ["date", "banana", "cherry", "apple", "elder"],  # undated last
    "priority": ["date", "apple", "elder", "banana", "cherry"],  # low to urgent
    "title": ["apple", "banana", "cherry", "date", "elder"],
}


@pytest.mark.parametrize("name", ORDERINGS)
def test_each_ordering_ascending_and_descending(
    alice: Api, five: dict[str, str], name: str
) -> None:
    expected = [five[title] for title in EXPECTED[name]]

    ascending = alice.get("todos/", ordering=name)
    descending = alice.get("todos/", ordering=f"-{name}")

    assert ascending.json()["ordering"] == name
    assert [t["id"] for t in ascending.json()["results"]] == expected
    assert descending.json()["ordering"] == f"-{name}"
    assert [t["id"] for t in descending.json()["results"]] == expected[::-1]


def test_the_default_ordering_is_newest_first(alice: Api, five: dict[str, str]) -> None:
    response = alice.get("todos/")

    assert response.json()["ordering"] == "-created_at"
    assert ids(alice) == [five[title] for title in EXPECTED["created_at"]][::-1]


def test_todos_without_a_due_date_sort_after_dated_ones(alice: Api) -> None:
    undated = make(alice, "No date")
    far = make(alice, "Far", due_at="2099-12-31T23:59:00Z")
    near = make(alice, "Near", due_at=PAST)

    assert ids(alice, ordering="due_at") == [near, far, undated]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"ordering": "colour"}, "ordering"),
        ({"ordering": "--title"}, "ordering"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "201"}, "page_size"),
        ({"page_size": "ten"}, "page_size"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_a_bad_ordering_page_size_or_cursor_is_a_400_naming_it(
    alice: Api, params: dict[str, str], field: str
) -> None:
    make(alice, "Something to list")

    response = alice.get("todos/", **params)

    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "invalid"
    assert field in response.json()["error"]["fields"]


# -- cursor pagination -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ORDERINGS)
def test_walking_the_pages_returns_every_todo_once_in_order(
    alice: Api, five: dict[str, str], name: str
) -> None:
    # Pages of two put a tie (two "medium", two undated) across a page boundary.
    for ordering, titles in ((name, EXPECTED[name]), (f"-{name}", EXPECTED[name][::-1])):
        pages = walk(alice, ordering=ordering, page_size=2)

        assert [len(page) for page in pages] == [2, 2, 1], ordering
        assert [todo_id for page in pages for todo_id in page] == [five[t] for t in titles]


def test_a_cursor_of_another_ordering_is_refused(alice: Api, five: dict[str, str]) -> None:
    first = alice.get("todos/", ordering="title", page_size=2).json()
    cursor = parse_qs(urlparse(first["next"]).query)["cursor"][0]
    assert alice.get("todos/", ordering="title", page_size=2, cursor=cursor).status_code == 200

    response = alice.get("todos/", ordering="priority", page_size=2, cursor=cursor)

    assert response.status_code == 400, response.json()
    assert "cursor" in response.json()["error"]["fields"]


def test_newest_first_pages_neither_repeat_nor_skip_when_todos_are_added(alice: Api) -> None:
    existing = [make(alice, f"Existing {n}") for n in range(5)]
    first = alice.get("todos/", ordering="-created_at", page_size=2).json()
    assert [t["id"] for t in first["results"]] == existing[:-3:-1]

    added = [make(alice, f"Added {n}") for n in range(3)]
    rest: list[str] = []
    response = alice.client.get(first["next"])
    while True:
        body = response.json()
        rest += [t["id"] for t in body["results"]]
        if body["next"] is None:
            break
        response = alice.client.get(body["next"])

    assert rest == existing[-3::-1]
    assert not set(added) & set(rest)
    assert ids(alice, ordering="-created_at")[:3] == added[::-1]


def test_oldest_first_pages_pick_up_todos_added_meanwhile_at_the_end(alice: Api) -> None:
    existing = [make(alice, f"Existing {n}") for n in range(5)]
    first = alice.get("todos/", ordering="created_at", page_size=2).json()
    assert [t["id"] for t in first["results"]] == existing[:2]

    added = [make(alice, f"Added {n}") for n in range(3)]
    rest: list[str] = []
    response = alice.client.get(first["next"])
    while True:
        body = response.json()
        rest += [t["id"] for t in body["results"]]
        if body["next"] is None:
            break
        response = alice.client.get(body["next"])

    assert rest == existing[2:] + added


def test_a_page_is_not_shifted_by_a_todo_leaving_the_list(alice: Api) -> None:
    existing = [make(alice, f"Existing {n}") for n in range(6)]
    first = alice.get("todos/", ordering="created_at", page_size=3).json()
    assert [t["id"] for t in first["results"]] == existing[:3]

    command(alice, existing[1], "delete")  # on the page already read
    second = alice.client.get(first["next"]).json()

    assert [t["id"] for t in second["results"]] == existing[3:]


# -- is_overdue ------------------------------------------------------------------------------


def test_is_overdue_is_computed_when_read(alice: Api) -> None:
    late = make(alice, "Late", due_at=PAST)
    late_but_done = make(alice, "Late but done", due_at=PAST)
    command(alice, late_but_done, "complete")
    undated = make(alice, "Undated")
    due = timezone.now() + timedelta(seconds=4)
    soon = make(alice, "Soon", due_at=due.isoformat())

    overdue = {t["id"]: t["is_overdue"] for t in listing(alice)}
    assert timezone.now() < due, "the test was too slow to see the todo before its due time"
    assert overdue == {late: True, late_but_done: False, undated: False, soon: False}
    assert alice.get(f"todos/{soon}/").json()["is_overdue"] is False

    # No event happens when the due time passes: the next read sees it.
    def soon_overdue() -> bool:
        return {t["id"]: t["is_overdue"] for t in listing(alice)}[soon]

    wait_until(soon_overdue, timeout=20, interval=0.2, message="'Soon' to be overdue")
    detail = alice.get(f"todos/{soon}/").json()
    assert (detail["is_overdue"], detail["version"]) == (True, 1)
    assert id_set(alice, overdue="true") == {late, soon}


# -- stats -----------------------------------------------------------------------------------


def test_stats_count_exactly_after_a_known_set_of_commands(alice: Api, bob: Api) -> None:
    def todo(title: str, priority: str, *actions: str, **fields: Any) -> str:
        todo_id = make(alice, title, priority=priority, **fields)
        for action in actions:
            command(alice, todo_id, action)
        return todo_id

    todo("open and late", "low", due_at=PAST)
    todo("completed", "medium", "complete")
    todo("deleted", "high", "delete")
    todo("open, due later", "urgent", due_at=FUTURE)
    upgraded = todo("upgraded then completed", "high")
    response = alice.patch(f"todos/{upgraded}/", {"priority": "urgent"})
    assert response.status_code == 200, response.json()
    command(alice, upgraded, "complete")
    todo("deleted then restored, late", "low", "delete", "restore", due_at=PAST)
    todo("completed then deleted", "medium", "complete", "delete", due_at=PAST)
    todo("completed, deleted, restored", "medium", "complete", "delete", "restore", due_at=PAST)
    todo("reopened", "high", "complete", "reopen")
    make(bob, "Bob's own", priority="urgent")

    stats = alice.get("todos/stats/")

    assert stats.status_code == 200, stats.json()
    # Not deleted: open and late, completed, due later, upgraded, restored late,
    # completed-deleted-restored, reopened = 7, of which 3 completed.
    assert stats.json() == {
        "total": 7,
        "open": 4,
        "completed": 3,
        "deleted": 2,
        "overdue": 2,
        "completion_rate": pytest.approx(3 / 7, abs=1e-4),
        "by_priority": {"low": 2, "medium": 2, "high": 1, "urgent": 2},
    }
    assert bob.get("todos/stats/").json()["total"] == 1


def test_stats_of_a_user_without_todos_are_zero(alice: Api) -> None:
    stats = alice.get("todos/stats/")

    assert stats.status_code == 200
    assert stats.json() == {
        "total": 0,
        "open": 0,
        "completed": 0,
        "deleted": 0,
        "overdue": 0,
        "completion_rate": 0.0,
        "by_priority": {"low": 0, "medium": 0, "high": 0, "urgent": 0},
    }


def test_the_completion_rate_leaves_deleted_todos_out(alice: Api) -> None:
    done = make(alice, "Done")
    command(alice, done, "complete")
    make(alice, "Open")
    for n in range(2):
        command(alice, make(alice, f"Dropped {n}"), "delete")

    stats = alice.get("todos/stats/").json()

    assert (stats["total"], stats["deleted"]) == (2, 2)
    assert stats["completion_rate"] == 0.5
