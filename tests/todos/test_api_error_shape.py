"""The error shape holds everywhere under /api/, with DEBUG on and off, and each 4xx is
logged once: one WARNING line, no traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client, override_settings

from apps.eventstore.models import Event
from tests.support.api import Api

pytestmark = pytest.mark.django_db

DEBUG_ON_AND_OFF = pytest.mark.parametrize("debug", [True, False], ids=["debug", "no-debug"])


def error_of(response: Any, status: int) -> dict[str, Any]:
    """Assert ``response`` is ``status`` in the documented error shape; return its error."""
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    assert {"code", "message", "fields"} <= set(body["error"])
    return body["error"]


@DEBUG_ON_AND_OFF
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope/",
        "/api/v1/todos/x/y/z/",
        "/api/nope/",
        "/api/v1/ops/sagas/%0A/",  # a line break where a UUID belongs
        "/api/v1/ops/dead-letters/1%0A2/",
    ],
)
def test_an_unknown_api_url_is_a_json_404(alice: Api, debug: bool, path: str) -> None:
    with override_settings(DEBUG=debug):
        response = alice.client.get(path)

    error = error_of(response, 404)
    assert (error["code"], error["message"], error["fields"]) == ("not_found", "Not found.", {})


def test_an_unknown_api_url_is_a_json_404_for_a_post_without_a_csrf_token(alice: Api) -> None:
    """A session client's POST: CSRF's HTML 403 must not answer before the 404."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.user)

    response = client.post("/api/v1/reminders/null,null/snooze/", {})

    assert error_of(response, 404)["code"] == "not_found"


@DEBUG_ON_AND_OFF
def test_an_api_url_without_its_slash_still_redirects_to_the_route(alice: Api, debug: bool) -> None:
    with override_settings(DEBUG=debug):
        response = alice.client.get("/api/v1/todos")

    assert (response.status_code, response["Location"]) == (301, "/api/v1/todos/")


@DEBUG_ON_AND_OFF
def test_a_refused_atomic_bulk_is_the_error_shape_with_its_report(alice: Api, debug: bool) -> None:
    items = [{"title": "Fine"}, {"title": ""}, {"title": "Also fine", "colour": "red"}]

    with override_settings(DEBUG=debug):
        response = alice.post("todos/bulk/", {"mode": "atomic", "items": items})

    error = error_of(response, 400)
    assert error["code"] == "invalid"
    assert error["message"] == "No todo was created: 2 of 3 items are invalid (see results)."
    assert error["fields"] == {
        "items": {
            "1": {"title": ["This field may not be blank."]},
            "2": {"colour": ["Unknown field."]},
        }
    }
    assert (error["mode"], error["created"], error["invalid"]) == ("atomic", 0, 2)
    assert [row["status"] for row in error["results"]] == ["not_created", "invalid", "invalid"]
    assert error["error_summary"] == {"colour:invalid": 1, "title:blank": 1}
    assert not Event.objects.filter(type="todo.created").exists()


def test_an_if_match_of_0_says_versions_start_at_1(alice: Api) -> None:
    todo = alice.create()

    response = alice.post(f"todos/{todo['id']}/complete/", **{"If-Match": '"0"'})

    assert error_of(response, 400)["fields"] == {"If-Match": ["Versions start at 1."]}


def test_an_error_about_no_one_field_is_told_in_its_own_words(alice: Api) -> None:
    response = alice.post("todos/", ["not", "an", "object"])

    error = error_of(response, 400)
    assert error["message"] == error["fields"]["non_field_errors"][0]
    assert "non_field_errors" not in error["message"]


# --- Logging: one line per 4xx ----------------------------------------------------------------


def emitting_handlers(record: logging.LogRecord) -> list[logging.Handler]:
    """Return the configured handlers that write ``record`` (pytest's own left out), as
    ``Logger.callHandlers`` picks them."""
    found: list[logging.Handler] = []
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        for handler in logger.handlers:
            if type(handler).__module__.startswith("_pytest"):
                continue
            if record.levelno >= handler.level and handler.filter(record):
                found.append(handler)
        logger = logger.parent if logger.propagate else None
    return found


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Return the records about requests (not the database's, the cache's or axes')."""
    quiet = ("django.db", "redis", "axes")
    return [r for r in caplog.records if not r.name.startswith(quiet)]


@DEBUG_ON_AND_OFF
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("patch", "me/", {"nope": 1}, 400),
        ("get", "todos/00000000-0000-0000-0000-000000000000/", None, 404),
        ("get", "nope/", None, 404),
    ],
    ids=["400", "404", "unknown-url"],
)
def test_a_4xx_is_logged_once_as_a_warning_without_a_traceback(
    alice: Api,
    caplog: pytest.LogCaptureFixture,
    debug: bool,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    caplog.set_level(logging.DEBUG)

    with override_settings(DEBUG=debug):
        response = alice.get(path) if body is None else getattr(alice, method)(path, body)
        assert response.status_code == status
        [line] = request_lines(caplog)
        assert (line.name, line.levelno, line.exc_info) == ("django.request", logging.WARNING, None)
        assert len(emitting_handlers(line)) == 1  # Django's DEBUG console handler wrote it twice
