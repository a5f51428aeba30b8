"""A notifications cursor not made by the API is a 400 naming ``cursor``, never a 500.

DRF's cursor is base64 of ``p=<created_at>&r=..&o=..``; it checks the shape but not the
position, which the query compares with ``created_at``: a NUL, a date that isn't one or an
offset PostgreSQL refuses reached the database (or Django's own parsing) as a 500.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.api import Api

pytestmark = pytest.mark.django_db

INVALID_CURSOR = {"cursor": ["Invalid cursor; start again without one."]}


@pytest.fixture
def api(alice: Api) -> Api:
    """Alice, with a client that answers a crash with the 500 a user would get."""
    alice.client.raise_request_exception = False
    return alice


def cursor_of(**tokens: str) -> str:
    """Encode a cursor the way DRF's CursorPagination does."""
    return base64.b64encode(urlencode(tokens).encode("ascii")).decode("ascii")


def assert_invalid_cursor(response: Any) -> None:
    assert response.status_code == 400, response.content[:500]
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["fields"] == INVALID_CURSOR


@pytest.mark.parametrize(
    "position",
    [
        pytest.param("a\x00b", id="nul"),
        pytest.param("2030-01-01 00:00:00\x00+00:00", id="nul-in-a-date"),
        pytest.param("2030-01-01 00:00:00+16:00", id="offset-16h"),
        pytest.param("2030-01-01 00:00:00-23:59", id="offset-minus-23h59"),
        pytest.param("2030-01-01 00:00:00+01:00:00.5", id="offset-fraction-of-a-second"),
        pytest.param("2030-02-30 00:00:00+00:00", id="february-30"),
        pytest.param("2030-01-01 00:00:00", id="naive"),
        pytest.param("soon", id="not-a-date"),
    ],
)
def test_a_cursor_position_postgresql_cant_compare_is_a_400(api: Api, position: str) -> None:
    assert_invalid_cursor(api.get("notifications/", cursor=cursor_of(p=position)))


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage!", id="not-base64"),
        pytest.param(cursor_of(r="9" * 5000), id="reverse-5000-digits"),
        pytest.param(cursor_of(o="-1"), id="negative-offset"),
    ],
)
def test_a_malformed_cursor_is_a_400_too(api: Api, cursor: str) -> None:
    assert_invalid_cursor(api.get("notifications/", cursor=cursor))


@pytest.mark.parametrize("position", ["2030-01-01 00:00:00+00:00", "2030-01-01 09:00:00+15:59"])
def test_a_cursor_drf_could_have_made_is_answered(api: Api, position: str) -> None:
    response = api.get("notifications/", cursor=cursor_of(p=position))

    assert response.status_code == 200, response.content[:500]
    assert response.json()["results"] == []
