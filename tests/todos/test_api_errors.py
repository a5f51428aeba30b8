"""Every bad request gets a precise 4xx in the one error shape; no request gets a 500.

The error shape is ``{"error": {"code", "message", "fields"}}`` (``apps.api.errors``).
The clients here don't re-raise server exceptions: a crash shows up as the 500 the user
would see, so every assertion on a status is also an assertion that nothing crashed.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from apps.api.throttles import cache_key
from apps.eventstore.models import Event
from apps.todos import fields as todo_fields
from tests.support.api import Api

pytestmark = pytest.mark.django_db

TODOS = "/api/v1/todos/"


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is ``status`` with the stable error shape and ``code``; return it."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["fields"], dict)
    return error


def assert_invalid(response: Any, *field_names: str) -> dict[str, Any]:
    """Assert a 400 ``invalid`` naming exactly ``field_names``; return the field messages."""
    error = assert_error(response, 400, "invalid")
    assert sorted(error["fields"]) == sorted(field_names)
    return error["fields"]


def anonymous() -> APIClient:
    client = APIClient()
    client.raise_request_exception = False
    return client


@pytest.fixture
def api(alice: Api) -> Api:
    """Alice, with a client that answers a crash with the 500 a user would get."""
    alice.client.raise_request_exception = False
    return alice


@pytest.fixture
def todo(api: Api) -> dict[str, Any]:
    return api.create(title="Pay rent")


def cursor_of(token: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


# --- Field validation -----------------------------------------------------------------------

INVALID_BODIES = [
    pytest.param({}, "title", id="missing-title"),
    pytest.param({"title": ""}, "title", id="empty-title"),
    pytest.param({"title": "   "}, "title", id="blank-title"),
    pytest.param({"title": "x" * (todo_fields.TITLE_MAX + 1)}, "title", id="title-201-chars"),
    pytest.param(
        {"title": "x", "description": "d" * (todo_fields.DESCRIPTION_MAX + 1)},
        "description",
        id="description-too-long",
    ),
    pytest.param({"title": "x", "priority": "critical"}, "priority", id="unknown-priority"),
    pytest.param({"title": "x", "priority": None}, "priority", id="null-priority"),
    pytest.param({"title": "x", "priority": 1}, "priority", id="numeric-priority"),
    pytest.param({"title": 5}, "title", id="title-a-number"),
    pytest.param({"title": True}, "title", id="title-a-boolean"),
    pytest.param({"title": ["x"]}, "title", id="title-a-list"),
    pytest.param({"title": None}, "title", id="title-null"),
    pytest.param({"title": "x", "description": 5}, "description", id="description-a-number"),
    pytest.param({"title": "x", "tags": "x"}, "tags", id="tags-a-string"),
    pytest.param({"title": "x", "tags": {"a": 1}}, "tags", id="tags-an-object"),
    pytest.param({"title": "x", "tags": [5]}, "tags", id="tag-a-number"),
    pytest.param(
        {"title": "x", "tags": [f"t{i}" for i in range(todo_fields.TAGS_MAX + 1)]},
        "tags",
        id="21-tags",
    ),
    pytest.param(
        {"title": "x", "tags": ["t" * (todo_fields.TAG_MAX + 1)]}, "tags", id="tag-41-chars"
    ),
    pytest.param({"title": "x", "due_at": "next tuesday"}, "due_at", id="due-at-unparseable"),
    pytest.param({"title": "x", "due_at": "2030-02-30T09:00:00Z"}, "due_at", id="due-at-feb-30"),
    pytest.param({"title": "x", "due_at": 1893456000}, "due_at", id="due-at-a-number"),
    pytest.param({"title": "x", "due_at": "10000-01-01T00:00:00Z"}, "due_at", id="due-at-year-1e4"),
    pytest.param({"title": "x", "due_at": "0000-01-01T00:00:00Z"}, "due_at", id="due-at-year-0"),
    pytest.param(
        {"title": "x", "due_at": "9999-12-31T23:59:59-01:00"}, "due_at", id="due-at-past-9999-utc"
    ),
    pytest.param(
        {"title": "x", "due_at": "0001-01-01T00:00:00+01:00"}, "due_at", id="due-at-before-1-utc"
    ),
    pytest.param({"title": "x", "colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"title": "a\u0000b"}, "title", id="nul-in-title"),
    pytest.param({"title": "x", "description": "a\u0000b"}, "description", id="nul-in-desc"),
    pytest.param({"title": "x", "tags": ["a\u0000b"]}, "tags", id="nul-in-tag"),
    pytest.param({"title": "x", "priority": "a\u0000b"}, "priority", id="nul-in-priority"),
    pytest.param({"title": "x", "a\u0000b": 1}, "a\u0000b", id="nul-in-field-name"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_BODIES)
def test_creating_with_an_invalid_field_is_a_400_naming_that_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    assert_invalid(api.post("todos/", body), field)

    assert not Event.objects.exists()


@pytest.mark.parametrize(("body", "field"), [p for p in INVALID_BODIES if p.id != "missing-title"])
def test_changing_with_an_invalid_field_is_a_400_and_changes_nothing(
    api: Api, todo: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    assert_invalid(api.patch(f"todos/{todo['id']}/", body), field)

    assert Event.objects.filter(stream_id=todo["id"]).count() == 1


def test_a_naive_due_at_is_refused_with_a_message_about_the_time_zone(api: Api) -> None:
    fields = assert_invalid(
        api.post("todos/", {"title": "x", "due_at": "2030-01-01T09:00:00"}), "due_at"
    )

    assert len(fields["due_at"]) == 1
    assert "time zone" in fields["due_at"][0]


def test_every_invalid_field_is_named_at_once(api: Api) -> None:
    body = {"title": "", "priority": "meh", "tags": "x", "due_at": "soon", "description": ["x"]}

    assert_invalid(api.post("todos/", body), "title", "priority", "tags", "due_at", "description")


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param(["Buy milk"], "list", id="array"),
        pytest.param("Buy milk", "str", id="string"),
        pytest.param(5, "int", id="number"),
        pytest.param(True, "bool", id="boolean"),
    ],
)
def test_a_body_that_is_not_an_object_is_a_400(api: Api, body: Any, kind: str) -> None:
    fields = assert_invalid(api.post("todos/", body), "non_field_errors")

    assert kind in fields["non_field_errors"][0]


LONE_SURROGATES = [
    pytest.param(b'{"title": "\\ud800"}', "title", id="title"),
    pytest.param(b'{"title": "a\\udfffb"}', "title", id="title-low-surrogate"),
    pytest.param(b'{"title": "x", "description": "\\ud800"}', "description", id="description"),
    pytest.param(b'{"title": "x", "tags": ["\\udc00"]}', "tags", id="tag"),
    pytest.param(b'{"title": "x", "due_at": "\\ud800"}', "due_at", id="due-at"),
    pytest.param(b'{"title": "x", "priority": "\\ud800"}', "priority", id="priority"),
    pytest.param(b'{"title": "x", "\\ud800": 1}', "\ud800", id="field-name"),
]


@pytest.mark.parametrize(("raw", "field"), LONE_SURROGATES)
def test_a_lone_surrogate_is_a_400_naming_its_field_never_a_500(
    api: Api, raw: bytes, field: str
) -> None:
    response = api.client.post(TODOS, raw, content_type="application/json")

    assert_invalid(response, field)
    assert not Event.objects.exists()


@pytest.mark.parametrize(("raw", "field"), LONE_SURROGATES)
def test_a_lone_surrogate_in_a_change_is_a_400_never_a_500(
    api: Api, todo: dict[str, Any], raw: bytes, field: str
) -> None:
    response = api.client.patch(f"{TODOS}{todo['id']}/", raw, content_type="application/json")

    assert_invalid(response, field)


@pytest.mark.parametrize(("raw", "field"), LONE_SURROGATES)
def test_a_lone_surrogate_in_a_bulk_item_marks_that_item_invalid_never_a_500(
    api: Api, raw: bytes, field: str
) -> None:
    body = b'{"mode": "atomic", "items": [{"title": "fine"}, ' + raw + b"]}"

    response = api.client.post(f"{TODOS}bulk/", body, content_type="application/json")

    assert response.status_code == 400, response.content[:500]
    result = response.json()["error"]
    assert (result["created"], result["invalid"]) == (0, 1)
    assert result["results"][0] == {"index": 0, "status": "not_created"}
    assert result["results"][1]["status"] == "invalid"
    assert list(result["results"][1]["errors"]) == [field]
    assert not Event.objects.exists()


# --- Unparseable, oversized and non-JSON bodies ---------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"title": ', id="truncated"),
        pytest.param(b"{'title': 'x'}", id="single-quotes"),
        pytest.param(b'{"title": NaN}', id="nan"),
        pytest.param(b'{"title": "x"} trailing', id="trailing-garbage"),
        pytest.param(b'\xff\xfe{"title": "x"}', id="not-utf8"),
    ],
)
def test_malformed_json_is_a_400_parse_error(api: Api, raw: bytes) -> None:
    response = api.client.post(TODOS, raw, content_type="application/json")

    error = assert_error(response, 400, "parse_error")
    assert error["fields"] == {}
    assert not Event.objects.exists()


def test_malformed_json_in_a_change_or_a_bulk_is_a_400_parse_error(
    api: Api, todo: dict[str, Any]
) -> None:
    raw = b'{"title": '

    changed = api.client.patch(f"{TODOS}{todo['id']}/", raw, content_type="application/json")
    bulk = api.client.post(f"{TODOS}bulk/", raw, content_type="application/json")

    assert_error(changed, 400, "parse_error")
    assert_error(bulk, 400, "parse_error")


def padded_body(size: int) -> bytes:
    """A valid create body of exactly ``size`` bytes."""
    head, tail = b'{"title": "x", "description": "', b'"}'
    return head + b"d" * (size - len(head) - len(tail)) + tail


def test_a_body_larger_than_the_limit_is_a_413_and_one_at_the_limit_is_accepted(
    api: Api, settings: Any
) -> None:
    settings.API_MAX_BODY_BYTES = 1024

    at_limit = api.client.post(TODOS, padded_body(1024), content_type="application/json")
    over = api.client.post(TODOS, padded_body(1025), content_type="application/json")

    assert at_limit.status_code == 201, at_limit.content[:500]
    error = assert_error(over, 413, "too_large")
    assert "1024" in error["message"]
    assert Event.objects.count() == 1


def test_a_huge_body_is_a_413_on_every_endpoint_that_reads_one(
    api: Api, todo: dict[str, Any], settings: Any
) -> None:
    settings.API_MAX_BODY_BYTES = 1024
    huge = json.dumps({"title": "x" * 100_000}).encode()
    huge_bulk = json.dumps({"items": [{"title": "x"}] * 10_000}).encode()

    created = api.client.post(TODOS, huge, content_type="application/json")
    changed = api.client.patch(f"{TODOS}{todo['id']}/", huge, content_type="application/json")
    bulk = api.client.post(f"{TODOS}bulk/", huge_bulk, content_type="application/json")

    for response in (created, changed, bulk):
        assert_error(response, 413, "too_large")
    assert Event.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param("title=Buy milk", "text/plain", id="text-plain"),
        pytest.param("title=Buy+milk", "application/x-www-form-urlencoded", id="form-urlencoded"),
        pytest.param('{"title": "Buy milk"}', "text/json", id="text-json"),
        pytest.param("<title>Buy milk</title>", "application/xml", id="xml"),
    ],
)
def test_a_body_that_is_not_json_is_a_415(api: Api, body: str, content_type: str) -> None:
    response = api.client.post(TODOS, body, content_type=content_type)

    assert_error(response, 415, "unsupported_media_type")
    assert not Event.objects.exists()


def test_a_multipart_form_is_a_415(api: Api) -> None:
    response = api.client.post(TODOS, {"title": "Buy milk"}, format="multipart")

    assert_error(response, 415, "unsupported_media_type")


# --- Authentication ---------------------------------------------------------------------------

SOME_ID = uuid.UUID("5e1f6a3c-9d7b-4c2e-8f10-2a3b4c5d6e7f")
EVERY_ENDPOINT = [
    ("get", TODOS),
    ("post", TODOS),
    ("get", f"{TODOS}{SOME_ID}/"),
    ("patch", f"{TODOS}{SOME_ID}/"),
    ("delete", f"{TODOS}{SOME_ID}/"),
    ("post", f"{TODOS}{SOME_ID}/complete/"),
    ("post", f"{TODOS}{SOME_ID}/reopen/"),
    ("post", f"{TODOS}{SOME_ID}/restore/"),
    ("get", f"{TODOS}{SOME_ID}/events/"),
    ("get", f"{TODOS}stats/"),
    ("post", f"{TODOS}bulk/"),
]


@pytest.fixture
def anon_throttle_reset() -> Iterator[None]:
    """Forget the anonymous request history of the test client's address (keys only)."""
    keys = [cache_key(scope, "127.0.0.1") for scope in ("anon", "user")]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


@pytest.mark.usefixtures("anon_throttle_reset")
@pytest.mark.parametrize(("method", "path"), EVERY_ENDPOINT)
def test_every_endpoint_needs_authentication(method: str, path: str) -> None:
    body = {"title": "x", "items": [{"title": "x"}]} if method in ("post", "patch") else None

    response = getattr(anonymous(), method)(path, body, format="json")

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"
    assert not Event.objects.exists()


@pytest.mark.usefixtures("anon_throttle_reset")
@pytest.mark.parametrize(("method", "path"), EVERY_ENDPOINT)
def test_a_wrong_token_is_a_401_on_every_endpoint(method: str, path: str) -> None:
    client = anonymous()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)

    response = getattr(client, method)(path, {"title": "x"}, format="json")

    assert_error(response, 401, "authentication_failed")


@pytest.mark.usefixtures("anon_throttle_reset")
def test_health_stays_open_without_authentication() -> None:
    response = anonymous().get("/health/")

    assert response.status_code in (200, 503)
    assert response.json()["status"] in ("ok", "degraded", "unavailable")


@pytest.mark.usefixtures("anon_throttle_reset")
def test_a_token_is_issued_for_the_right_password_and_works(alice: Api) -> None:
    client = anonymous()

    response = client.post(
        "/api/v1/auth/token/", {"username": "alice", "password": "pw-alice-1"}, format="json"
    )

    assert response.status_code == 200
    assert set(response.json()) == {"token", "expiry"}
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert client.get(TODOS).status_code == 200


@pytest.mark.usefixtures("anon_throttle_reset")
@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param({"username": "alice", "password": "wrong"}, id="wrong-password"),
        pytest.param({"username": "nobody", "password": "pw-alice-1"}, id="unknown-user"),
    ],
)
def test_wrong_credentials_get_no_token_and_do_not_say_which_part_was_wrong(
    alice: Api, credentials: dict[str, str]
) -> None:
    response = anonymous().post("/api/v1/auth/token/", credentials, format="json")

    error = assert_error(response, 400, "invalid")
    sentence = "Unable to log in with the given username and password."
    assert error["message"] == sentence  # a sentence, not "Invalid input: non_field_errors"
    assert error["fields"] == {"non_field_errors": [sentence]}


@pytest.mark.usefixtures("anon_throttle_reset")
def test_a_token_request_without_a_password_names_the_field(alice: Api) -> None:
    response = anonymous().post("/api/v1/auth/token/", {"username": "alice"}, format="json")

    assert_invalid(response, "password")


# --- Unknown todos, unknown routes and methods ---------------------------------------------

UNKNOWN_TODO_REQUESTS = [
    ("get", ""),
    ("patch", ""),
    ("delete", ""),
    ("post", "complete/"),
    ("post", "reopen/"),
    ("post", "restore/"),
    ("get", "events/"),
]


@pytest.mark.parametrize(("method", "action"), UNKNOWN_TODO_REQUESTS)
def test_an_unknown_todo_is_a_404_not_found(api: Api, method: str, action: str) -> None:
    missing = uuid.uuid4()
    body = {"title": "x"} if method == "patch" else None

    response = getattr(api.client, method)(f"{TODOS}{missing}/{action}", body, format="json")

    error = assert_error(response, 404, "not_found")
    assert error["fields"] == {}
    assert not Event.objects.exists()


@pytest.mark.parametrize(("method", "action"), UNKNOWN_TODO_REQUESTS)
@pytest.mark.parametrize(
    "bad_id",
    [
        "not-a-uuid",
        "123",
        "5e1f6a3c-9d7b-4c2e-8f10-2a3b4c5d6e7",
        "5e1f6a3c9d7b4c2e8f102a3b4c5d6e7fz",
    ],
)
def test_a_malformed_todo_id_in_the_url_is_a_404(
    api: Api, method: str, action: str, bad_id: str
) -> None:
    body = {"title": "x"} if method == "patch" else None

    response = getattr(api.client, method)(f"{TODOS}{bad_id}/{action}", body, format="json")

    assert response.status_code == 404, response.content[:500]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", f"{TODOS}{SOME_ID}/"),
        ("put", TODOS),
        ("delete", TODOS),
        ("post", f"{TODOS}{SOME_ID}/"),
        ("get", f"{TODOS}{SOME_ID}/complete/"),
        ("patch", f"{TODOS}stats/"),
    ],
)
def test_a_method_a_resource_does_not_support_is_a_405(api: Api, method: str, path: str) -> None:
    response = getattr(api.client, method)(path, {"title": "x"}, format="json")

    assert_error(response, 405, "method_not_allowed")


def test_put_on_an_existing_todo_is_a_405_and_changes_nothing(
    api: Api, todo: dict[str, Any]
) -> None:
    response = api.client.put(f"{TODOS}{todo['id']}/", {"title": "Replaced"}, format="json")

    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"]
    assert "PUT" not in response["Allow"]
    assert Event.objects.filter(stream_id=todo["id"]).count() == 1


# --- If-Match and optimistic concurrency -----------------------------------------------------


@pytest.mark.parametrize(
    "if_match", ["abc", "-1", '"1.5"', "", "W/", '"1", "2"', "1e3", "\u00b2"]
)  # "0" has a message of its own (tests/todos/test_postgres_limits.py)
@pytest.mark.parametrize("action", ["patch", "complete/", "delete"])
def test_a_malformed_if_match_is_a_400_naming_the_header(
    api: Api, todo: dict[str, Any], if_match: str, action: str
) -> None:
    path = f"todos/{todo['id']}/"
    headers = {"If-Match": if_match}
    if action == "patch":
        response = api.patch(path, {"title": "Changed"}, **headers)
    elif action == "delete":
        response = api.delete(path, **headers)
    else:
        response = api.post(path + action, **headers)

    fields = assert_invalid(response, "If-Match")
    assert fields["If-Match"] == ['Must be a version number, e.g. "3".']
    assert Event.objects.filter(stream_id=todo["id"]).count() == 1


def test_a_stale_if_match_is_a_409_conflict_with_the_current_version(
    api: Api, todo: dict[str, Any]
) -> None:
    path = f"todos/{todo['id']}/"
    assert api.patch(path, {"title": "Pay the rent"}).json()["version"] == 2

    stale = api.post(path + "complete/", **{"If-Match": '"1"'})

    error = assert_error(stale, 409, "conflict")
    assert error["current_version"] == 2
    assert error["fields"] == {}
    assert stale["ETag"] == '"2"'
    assert not Event.objects.filter(stream_id=todo["id"], type="todo.completed").exists()


@pytest.mark.parametrize("if_match", ['"2"', "2", 'W/"2"'])
def test_a_current_if_match_succeeds(api: Api, todo: dict[str, Any], if_match: str) -> None:
    path = f"todos/{todo['id']}/"
    api.patch(path, {"title": "Pay the rent"})

    response = api.post(path + "complete/", **{"If-Match": if_match})

    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["version"]) == ("completed", 3)
    assert response["ETag"] == '"3"'


def test_a_stale_if_match_on_a_change_is_a_409_and_the_change_is_not_made(
    api: Api, todo: dict[str, Any]
) -> None:
    path = f"todos/{todo['id']}/"
    api.post(path + "complete/")

    stale = api.patch(path, {"title": "Lost update"}, **{"If-Match": "1"})
    current = api.patch(path, {"title": "Kept update"}, **{"If-Match": "2"})

    assert assert_error(stale, 409, "conflict")["current_version"] == 2
    assert stale["ETag"] == '"2"'
    assert current.status_code == 200
    assert (current.json()["title"], current.json()["version"]) == ("Kept update", 3)


def test_an_if_match_ahead_of_the_todo_is_a_409_too(api: Api, todo: dict[str, Any]) -> None:
    response = api.delete(f"todos/{todo['id']}/", **{"If-Match": "9" * 30})

    assert assert_error(response, 409, "conflict")["current_version"] == 1


# --- Business rules ---------------------------------------------------------------------------


def test_completing_twice_is_a_409_rule_violated(api: Api, todo: dict[str, Any]) -> None:
    path = f"todos/{todo['id']}/complete/"
    assert api.post(path).status_code == 200

    error = assert_error(api.post(path), 409, "rule_violated")

    assert error["message"] == "the todo is already completed"
    assert error["fields"] == {}
    assert Event.objects.filter(stream_id=todo["id"], type="todo.completed").count() == 1


def test_reopening_an_open_todo_is_a_409_rule_violated(api: Api, todo: dict[str, Any]) -> None:
    error = assert_error(api.post(f"todos/{todo['id']}/reopen/"), 409, "rule_violated")

    assert error["message"] == "the todo is already open"


def test_restoring_a_todo_that_is_not_deleted_is_a_409_rule_violated(
    api: Api, todo: dict[str, Any]
) -> None:
    error = assert_error(api.post(f"todos/{todo['id']}/restore/"), 409, "rule_violated")

    assert error["message"] == "only a deleted todo can be restored"


@pytest.mark.parametrize(
    ("method", "action", "body", "message"),
    [
        ("patch", "", {"title": "x"}, "a deleted todo can't be changed; restore it first"),
        ("post", "complete/", None, "a deleted todo can't be completed"),
        ("post", "reopen/", None, "a deleted todo can't be reopened; restore it first"),
        ("delete", "", None, "the todo is already deleted"),
    ],
)
def test_commands_on_a_deleted_todo_are_a_409_rule_violated(
    api: Api, todo: dict[str, Any], method: str, action: str, body: Any, message: str
) -> None:
    path = f"{TODOS}{todo['id']}/"
    assert api.client.delete(path).status_code == 200

    response = getattr(api.client, method)(path + action, body, format="json")

    assert assert_error(response, 409, "rule_violated")["message"] == message
    assert Event.objects.filter(stream_id=todo["id"]).count() == 2


# --- List parameters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"ordering": "bogus"}, "ordering", id="ordering-unknown"),
        pytest.param({"ordering": "--title"}, "ordering", id="ordering-double-minus"),
        pytest.param({"ordering": "owner_id"}, "ordering", id="ordering-a-column"),
        pytest.param({"page_size": "0"}, "page_size", id="page-size-0"),
        pytest.param({"page_size": "201"}, "page_size", id="page-size-201"),
        pytest.param({"page_size": "-1"}, "page_size", id="page-size-negative"),
        pytest.param({"page_size": "ten"}, "page_size", id="page-size-word"),
        pytest.param({"page_size": "\u00b2"}, "page_size", id="page-size-superscript"),
        pytest.param({"page_size": "9" * 40}, "page_size", id="page-size-huge"),
        pytest.param({"cursor": "garbage"}, "cursor", id="cursor-garbage"),
        pytest.param({"cursor": "e30="}, "cursor", id="cursor-empty-object"),
        pytest.param(
            {"cursor": cursor_of({"v": "2030-01-01T00:00:00+00:00", "id": 1, "o": "due_at"})},
            "cursor",
            id="cursor-of-another-ordering",
        ),
        pytest.param(
            {"ordering": "title", "cursor": cursor_of({"v": "a\u0000b", "id": 1, "o": "title"})},
            "cursor",
            id="cursor-with-nul",
        ),
        pytest.param(
            {
                "ordering": "priority",
                "cursor": cursor_of({"v": "high", "id": 1, "o": "priority"}),
            },
            "cursor",
            id="cursor-value-of-the-wrong-type",
        ),
        pytest.param(
            {"ordering": "due_at", "cursor": cursor_of({"v": "soon", "id": 1, "o": "due_at"})},
            "cursor",
            id="cursor-date-unparseable",
        ),
        pytest.param({"status": "bogus"}, "status", id="status-unknown"),
        pytest.param({"priority": "critical"}, "priority", id="priority-unknown"),
        pytest.param({"due_before": "notadate"}, "due_before", id="due-before-unparseable"),
        pytest.param({"due_after": "2030-13-01T00:00:00Z"}, "due_after", id="due-after-month-13"),
        pytest.param({"due_before": "0000-01-01T00:00:00Z"}, "due_before", id="due-before-year-0"),
        pytest.param({"search": "a\u0000b"}, "search", id="search-with-nul"),
        pytest.param({"tag": "t" * 41}, "tag", id="tag-41-chars"),
    ],
)
def test_a_bad_list_parameter_is_a_400_naming_it(
    api: Api, params: dict[str, str], field: str
) -> None:
    assert_invalid(api.get("todos/", **params), field)


# --- Throttling -------------------------------------------------------------------------------


@pytest.fixture
def user_rate_of_3_per_minute(settings: Any) -> None:
    """Lower the per-user rate to 3/min through REST_FRAMEWORK (the throttle reads it on
    every request)."""
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "3/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    assert api_settings.DEFAULT_THROTTLE_RATES["user"] == "3/min"


@pytest.fixture
def fresh_request_history(alice: Api, bob: Api) -> Iterator[None]:
    """Forget Alice's and Bob's request history before and after the test.

    Only their keys: the cache shares its Redis db with the Celery broker, so clearing the
    whole cache would also drop the session worker's queues and bindings.
    """
    keys = [cache_key("user", str(user.user.pk)) for user in (alice, bob)]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


@pytest.mark.usefixtures("user_rate_of_3_per_minute", "fresh_request_history")
def test_the_request_after_the_rate_is_a_429_with_retry_after(api: Api, bob: Api) -> None:
    allowed = [api.get("todos/stats/") for _ in range(3)]

    throttled = api.get("todos/stats/")
    throttled_create = api.post("todos/", {"title": "Over the limit"})

    assert [r.status_code for r in allowed] == [200, 200, 200]
    for response in (throttled, throttled_create):
        error = assert_error(response, 429, "throttled")
        assert error["fields"] == {}
        assert 1 <= int(response["Retry-After"]) <= 60
    assert not Event.objects.exists()
    assert bob.get("todos/stats/").status_code == 200
