"""A JSON body nested too deep is a 400 parse error on every endpoint that reads one.

Python's JSON decoder recurses once per level and gives up with a ``RecursionError`` near
the interpreter's recursion limit (a 500 until the parser caught it). Well below that,
``BoundedJSONParser`` refuses anything deeper than ``MAX_JSON_DEPTH``, so no later code
that recurses over the data (encoders, the error renderer) meets a structure that deep.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from apps.api.parsers import MAX_JSON_DEPTH, nested_deeper_than
from apps.api.throttles import cache_key
from apps.eventstore.models import Event
from tests.support.api import Api

pytestmark = pytest.mark.django_db

DEEP = b'{"title": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def nested(depth: int) -> Any:
    """Return ``depth`` levels of arrays and objects (the outermost counts as one)."""
    value: Any = []
    for level in range(depth - 1):
        value = {"x": value} if level % 2 else [value]
    return value


def assert_parse_error(response: Any) -> None:
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "parse_error"
    assert str(MAX_JSON_DEPTH) in error["message"]
    assert error["fields"] == {}


@pytest.fixture
def api(alice: Api) -> Api:
    """Alice, with a client that answers a crash with the 500 a user would get."""
    alice.client.raise_request_exception = False
    return alice


@pytest.fixture
def anonymous(settings: Any) -> Iterator[APIClient]:
    """A client without credentials; the token endpoint's rates are off (no count is kept)."""
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]}
    rates.update(login_address=None, login_username=None, anon=None)
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    client = APIClient()
    client.raise_request_exception = False
    yield client
    cache.delete(cache_key("anon", "127.0.0.1"))


@pytest.mark.parametrize(
    ("depth", "deeper"),
    [(1, False), (MAX_JSON_DEPTH, False), (MAX_JSON_DEPTH + 1, True), (100_000, True)],
)
def test_nesting_is_measured_without_recursion(depth: int, deeper: bool) -> None:
    assert nested_deeper_than(nested(depth), MAX_JSON_DEPTH) is deeper


def test_scalars_and_flat_data_are_not_deep() -> None:
    assert not nested_deeper_than("x", 1)
    assert not nested_deeper_than({"items": [{"title": "x", "tags": ["a"]}] * 1000}, 4)
    assert nested_deeper_than({"items": [{"title": "x", "tags": ["a"]}]}, 3)


def test_a_body_nested_5000_deep_is_a_400_on_every_endpoint_that_reads_one(api: Api) -> None:
    todo = api.create()
    paths = [
        ("post", "/api/v1/todos/"),
        ("post", "/api/v1/todos/bulk/"),
        ("patch", f"/api/v1/todos/{todo['id']}/"),
        ("post", f"/api/v1/todos/{todo['id']}/reminders/"),
        ("post", f"/api/v1/reminders/{todo['id']}/snooze/"),
        ("patch", "/api/v1/me/"),
    ]

    for method, path in paths:
        assert_parse_error(getattr(api.client, method)(path, DEEP, content_type="application/json"))
    assert Event.objects.count() == 1


def test_a_deep_body_with_an_idempotency_key_is_a_400_and_keeps_no_outcome(api: Api) -> None:
    headers = {"Idempotency-Key": "deep-1"}

    deep = api.client.post("/api/v1/todos/", DEEP, content_type="application/json", headers=headers)
    fine = api.client.post("/api/v1/todos/", {"title": "x"}, format="json", headers=headers)

    assert_parse_error(deep)
    assert fine.status_code == 201, fine.content[:300]


def test_a_body_nested_5000_deep_is_a_400_at_the_token_endpoint(anonymous: APIClient) -> None:
    response = anonymous.post("/api/v1/auth/token/", DEEP, content_type="application/json")

    assert_parse_error(response)


def test_a_body_at_the_depth_limit_is_parsed_and_then_validated(api: Api) -> None:
    at_limit = json.dumps({"title": nested(MAX_JSON_DEPTH - 1)})
    over = json.dumps({"title": nested(MAX_JSON_DEPTH)})

    validated = api.client.post("/api/v1/todos/", at_limit, content_type="application/json")
    refused = api.client.post("/api/v1/todos/", over, content_type="application/json")

    assert validated.status_code == 400
    assert validated.json()["error"]["fields"] == {"title": ["Must be a string."]}
    assert_parse_error(refused)
