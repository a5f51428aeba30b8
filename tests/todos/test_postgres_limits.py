"""Values that Python takes and PostgreSQL refuses are 400s naming their parameter.

A list filter or a cursor is compared in a query, not stored, so no serializer field
checks it: Python parses an offset up to ±23:59 (to the microsecond), PostgreSQL only
up to ±15:59:59; a title cursor may hold a lone surrogate and the driver can't encode it;
``int()`` refuses more than 4,300 digits. Each of these was a 500.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from apps.api.storable import OFFSET_MESSAGE
from apps.eventstore.models import Event
from tests.support.api import Api

pytestmark = pytest.mark.django_db

OUT_OF_RANGE_OFFSETS = ["+16:00", "-16:00", "-23:59", "+23:59:59", "+01:00:00.5"]
IN_RANGE_OFFSETS = ["+15:59", "-15:59:59", "+05:30", "Z"]
INVALID_CURSOR = ["Invalid cursor; start again without one."]


@pytest.fixture
def api(alice: Api) -> Api:
    """Alice, with a client that answers a crash with the 500 a user would get."""
    alice.client.raise_request_exception = False
    return alice


def cursor_of(value: Any, ordering: str, row_id: Any = 1) -> str:
    token = {"v": value, "id": row_id, "o": ordering}
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def invalid_fields(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.content[:500]
    error = response.json()["error"]
    assert error["code"] == "invalid"
    return error["fields"]


@pytest.mark.parametrize("offset", OUT_OF_RANGE_OFFSETS)
@pytest.mark.parametrize("name", ["due_before", "due_after"])
def test_a_due_filter_with_an_offset_postgresql_refuses_is_a_400(
    api: Api, name: str, offset: str
) -> None:
    response = api.get("todos/", **{name: f"2030-01-01T00:00:00{offset}"})

    assert invalid_fields(response) == {name: [OFFSET_MESSAGE]}


@pytest.mark.parametrize("offset", IN_RANGE_OFFSETS)
@pytest.mark.parametrize("name", ["due_before", "due_after"])
def test_a_due_filter_with_any_offset_postgresql_takes_is_answered(
    api: Api, name: str, offset: str
) -> None:
    response = api.get("todos/", **{name: f"2030-01-01T00:00:00{offset}"})

    assert response.status_code == 200, response.content[:500]


@pytest.mark.parametrize("offset", OUT_OF_RANGE_OFFSETS)
@pytest.mark.parametrize("ordering", ["due_at", "-due_at", "created_at", "-created_at"])
def test_a_date_cursor_with_an_offset_postgresql_refuses_is_a_400(
    api: Api, ordering: str, offset: str
) -> None:
    cursor = cursor_of(f"2030-01-01T00:00:00{offset}", ordering)

    response = api.get("todos/", ordering=ordering, cursor=cursor)

    assert invalid_fields(response) == {"cursor": INVALID_CURSOR}


@pytest.mark.parametrize("offset", IN_RANGE_OFFSETS)
def test_a_date_cursor_with_any_offset_postgresql_takes_is_answered(api: Api, offset: str) -> None:
    cursor = cursor_of(f"2030-01-01T00:00:00{offset}", "due_at")

    assert api.get("todos/", ordering="due_at", cursor=cursor).status_code == 200


@pytest.mark.parametrize(
    ("ordering", "value", "row_id"),
    [
        pytest.param("title", "\ud800", 1, id="title-lone-surrogate"),
        pytest.param("title", "a\udfffb", 1, id="title-low-surrogate"),
        pytest.param("title", "x", float("inf"), id="id-infinity"),
        pytest.param("title", "x", "9" * 5000, id="id-5000-digits"),
        pytest.param("priority", 2.5, 1, id="priority-a-float"),
    ],
)
def test_a_cursor_value_postgresql_cant_compare_is_a_400(
    api: Api, ordering: str, value: Any, row_id: Any
) -> None:
    response = api.get("todos/", ordering=ordering, cursor=cursor_of(value, ordering, row_id))

    assert invalid_fields(response) == {"cursor": INVALID_CURSOR}


def test_a_cursor_of_json_nested_5000_deep_is_a_400(api: Api) -> None:
    token = b'{"v": "x", "id": 1, "o": "title", "z": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    cursor = base64.urlsafe_b64encode(token).decode()

    response = api.get("todos/", ordering="title", cursor=cursor)

    assert invalid_fields(response) == {"cursor": INVALID_CURSOR}


def test_a_title_cursor_still_pages(api: Api) -> None:
    assert api.get("todos/", ordering="title", cursor=cursor_of("é ☃", "title")).status_code == 200


# --- If-Match ---------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["patch", "complete/", "delete"])
def test_an_if_match_of_5000_digits_is_a_400_naming_the_header(api: Api, action: str) -> None:
    todo = api.create()
    path = f"todos/{todo['id']}/"
    headers = {"If-Match": "9" * 5000}
    if action == "patch":
        response = api.patch(path, {"title": "Changed"}, **headers)
    elif action == "delete":
        response = api.delete(path, **headers)
    else:
        response = api.post(path + action, **headers)

    assert invalid_fields(response) == {"If-Match": ['Must be a version number, e.g. "3".']}
    assert Event.objects.filter(stream_id=todo["id"]).count() == 1


@pytest.mark.parametrize("if_match", ['"0"', "0", "00", 'W/"0"'])
def test_an_if_match_of_version_0_says_versions_start_at_1(api: Api, if_match: str) -> None:
    todo = api.create()

    response = api.post(f"todos/{todo['id']}/complete/", **{"If-Match": if_match})

    assert invalid_fields(response) == {"If-Match": ["Versions start at 1."]}


def test_an_if_match_of_64_digits_is_still_a_version_ahead_of_the_todo(api: Api) -> None:
    todo = api.create()

    response = api.post(f"todos/{todo['id']}/complete/", **{"If-Match": "9" * 64})

    assert response.status_code == 409, response.content[:500]
    assert response.json()["error"]["current_version"] == 1
