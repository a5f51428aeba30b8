"""The token cache: a token that checked out is not looked up again for a few seconds;
a revocation in this process applies at once, one made elsewhere within the window."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from knox.models import AuthToken

from apps.accounts.services import issue_token
from tests.accounts.conftest import TOKEN_URL, anonymous
from tests.support.api import Api

pytestmark = pytest.mark.django_db

TODOS = "/api/v1/todos/"


def get_todos(key: str) -> Any:
    client = anonymous()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get(TODOS)


def token_queries(key: str) -> tuple[int, int]:
    """Return the status of a GET with ``key`` and how many queries read the token table."""
    with CaptureQueriesContext(connection) as queries:
        status = get_todos(key).status_code
    return status, sum("knox_authtoken" in query["sql"] for query in queries.captured_queries)


def until_refused(key: str, seconds: float) -> float:
    """Poll until ``key`` is refused (401); return how long that took (fail past ``seconds``)."""
    started = time.monotonic()
    while (status := get_todos(key).status_code) != 401:
        assert status == 200, status
        assert time.monotonic() - started < seconds, f"still accepted after {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_token_is_looked_up_once_then_remembered(alice: Api, settings: Any) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 60

    first = token_queries(alice.token)
    later = [token_queries(alice.token) for _ in range(3)]

    assert first[0] == 200
    assert first[1] >= 1
    assert later == [(200, 0)] * 3


def test_with_no_cache_every_request_looks_the_token_up(alice: Api, settings: Any) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 0

    statuses = [token_queries(alice.token) for _ in range(3)]

    assert all(status == 200 and reads >= 1 for status, reads in statuses), statuses


def test_revoking_through_the_api_applies_at_once(alice: Api, settings: Any) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 60
    assert get_todos(alice.token).status_code == 200  # remembered now
    client = anonymous()
    client.credentials(HTTP_AUTHORIZATION=f"Token {alice.token}")

    assert client.delete(TOKEN_URL).status_code == 204
    assert get_todos(alice.token).status_code == 401


def test_deleting_tokens_as_the_console_does_applies_at_once(alice: Api, settings: Any) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 60
    assert get_todos(alice.token).status_code == 200

    AuthToken.objects.filter(user=alice.user).delete()  # the admin's bulk delete

    assert get_todos(alice.token).status_code == 401


def test_deactivating_a_user_applies_at_once(alice: Api, settings: Any) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 60
    assert get_todos(alice.token).status_code == 200

    alice.user.is_active = False
    alice.user.save()

    assert get_todos(alice.token).status_code == 401


def test_a_token_revoked_by_another_process_works_here_at_most_the_window(
    alice: Api, settings: Any
) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 3
    assert get_todos(alice.token).status_code == 200
    with connection.cursor() as cursor:  # as another process would: no signal reaches here
        cursor.execute("DELETE FROM knox_authtoken WHERE user_id = %s", [alice.user.pk])

    assert get_todos(alice.token).status_code == 200  # inside the documented window
    assert until_refused(alice.token, seconds=15) <= 3 + 2  # the window, and slack for load


def test_a_remembered_token_still_expires_on_time(alice: Api, settings: Any) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 600
    row, key = AuthToken.objects.create(user=alice.user, expiry=timedelta(seconds=3))
    assert get_todos(key).status_code == 200

    until_refused(key, seconds=15)  # long before the cache's 600 s

    assert not AuthToken.objects.filter(pk=row.pk).exists()  # knox deleted it on the miss


def test_a_key_sharing_a_remembered_keys_prefix_is_refused(alice: Api, settings: Any) -> None:
    """The database finds a token by its first 15 characters; the cache must not."""
    settings.API_TOKEN_CACHE_SECONDS = 60
    assert get_todos(alice.token).status_code == 200
    last = "0" if alice.token[-1] != "0" else "1"

    assert get_todos(alice.token[:-1] + last).status_code == 401
    assert get_todos(alice.token[:15] + "0" * (len(alice.token) - 15)).status_code == 401


def test_what_a_request_sets_on_its_user_stays_with_that_request(alice: Api, settings: Any) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 60
    client = anonymous()
    client.credentials(HTTP_AUTHORIZATION=f"Token {alice.token}")
    first = client.get(TODOS)
    first.wsgi_request.user.marked_by_a_view = True

    second = client.get(TODOS)
    second.wsgi_request.user.marked_by_a_view = True  # on what the cache handed out
    third = client.get(TODOS)

    assert second.status_code == third.status_code == 200
    assert second.wsgi_request.user.pk == alice.user.pk
    assert not hasattr(third.wsgi_request.user, "marked_by_a_view")


def test_another_users_token_is_not_mistaken_for_a_remembered_one(
    alice: Api, bob: Api, settings: Any
) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 60
    assert get_todos(alice.token).status_code == 200
    bob_key = issue_token(user=bob.user).key

    client = anonymous()
    client.credentials(HTTP_AUTHORIZATION=f"Token {bob_key}")
    me = client.get("/api/v1/me/")

    assert me.status_code == 200
    assert me.json()["username"] == "bob"


@pytest.mark.parametrize("seconds", [0, 60])
def test_a_key_that_is_not_utf8_is_a_401(alice: Api, settings: Any, seconds: int) -> None:
    settings.API_TOKEN_CACHE_SECONDS = seconds
    client = anonymous()
    client.credentials(HTTP_AUTHORIZATION="Token \xff\xfe")

    response = client.get(TODOS)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
