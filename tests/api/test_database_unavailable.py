"""A database that drops or refuses connections (a restart, ``pg_terminate_backend``, a
failover) makes a request a 503 in the error shape, which the client may retry, never a
500; an unexpected database error is still the 500 it was.

The database fails at its edge: an execute wrapper raises what psycopg raises on a
terminated or refused connection, as Django wraps it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from django.db import InterfaceError, OperationalError, ProgrammingError, connection

from tests.support.api import Api

pytestmark = pytest.mark.django_db

TERMINATED = "terminating connection due to administrator command"


@pytest.fixture
def api(alice: Api) -> Api:
    """Alice, with a client that answers a crash with the 500 a user would get."""
    alice.client.raise_request_exception = False
    return alice


@contextmanager
def failing(exc: Exception, when: Callable[[str], bool] = lambda sql: True) -> Iterator[None]:
    """Raise ``exc`` from every query whose SQL ``when`` accepts."""

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if when(sql):
            raise exc
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.content[:300]
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"]
    assert "127.0.0.1" not in error["message"]  # the database's error stays in the log


def test_a_command_whose_connection_is_terminated_is_a_503(api: Api) -> None:
    with failing(OperationalError(TERMINATED), when=lambda sql: "eventstore_append" in sql):
        response = api.post("todos/", {"title": "Pay rent"})

    assert_unavailable(response)


def test_a_request_while_the_database_refuses_connections_is_a_503(api: Api) -> None:
    refused = OperationalError('connection to server at "127.0.0.1" failed: Connection refused')
    with failing(refused):
        response = api.get("todos/")

    assert_unavailable(response)


def test_a_request_on_a_closed_connection_is_a_503(api: Api) -> None:
    with failing(InterfaceError("connection already closed")):
        response = api.post("todos/", {"title": "Pay rent"})

    assert_unavailable(response)


def test_a_database_outage_is_logged_as_a_warning_without_a_traceback(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="apps.api.errors"),
        failing(OperationalError(TERMINATED)),
    ):
        api.get("todos/")

    records = [r for r in caplog.records if r.name == "apps.api.errors"]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert records[0].exc_info is None


def test_an_unexpected_database_error_is_still_a_500(api: Api) -> None:
    with failing(ProgrammingError('relation "todos_todoview" does not exist')):
        response = api.get("todos/")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"


def caused_by(cause: Exception) -> OperationalError:
    """Django's OperationalError as it wraps ``cause`` (``raise … from``)."""
    exc = OperationalError(str(cause))
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("cause", "status"),
    [
        (psycopg.errors.AdminShutdown(TERMINATED), 503),  # 57P01: a terminated backend
        (psycopg.errors.SerializationFailure("could not serialize"), 503),  # 40001
        (psycopg.errors.DiskFull("could not extend file"), 500),  # 53100: no retry cures it
        (sqlite3.OperationalError("database is locked"), 503),
        (sqlite3.OperationalError("no such table: todos_todoview"), 500),  # a migration missing
    ],
    ids=["terminated", "serialization", "disk-full", "sqlite-locked", "sqlite-no-table"],
)
def test_only_a_database_error_a_retry_may_cure_is_a_503(
    api: Api, cause: Exception, status: int
) -> None:
    with failing(caused_by(cause)):
        response = api.get("todos/")

    assert response.status_code == status, response.content[:300]


def test_django_does_not_log_a_503_again_as_an_error(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    # django.request's ERROR goes to mail_admins without DEBUG: one mail per request of an
    # outage. The API's own WARNING is the one line.
    with caplog.at_level(logging.WARNING), failing(OperationalError(TERMINATED)):
        response = api.get("todos/")

    assert response.status_code == 503
    assert not [r for r in caplog.records if r.name == "django.request"]
