"""API tokens: issued once, stored as a hash, expiring, revocable, never cached.

Alice logs in from a second device: each device has a token of its own, and revoking one
leaves the other working.
"""

from __future__ import annotations

import hashlib
import importlib
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.accounts.conftest import TOKEN_URL, anonymous, log_in
from tests.support.api import Api

pytestmark = pytest.mark.django_db

TODOS = "/api/v1/todos/"
migration = importlib.import_module("apps.accounts.migrations.0001_forget_drf_tokens")


def with_token(key: str) -> APIClient:
    client = anonymous()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def cache_control(response: Any) -> set[str]:
    return {part.strip() for part in response.get("Cache-Control", "").split(",")}


def test_a_token_is_issued_with_its_expiry_and_works(alice: Api, settings: Any) -> None:
    settings.API_TOKEN_TTL_HOURS = 2

    response = log_in("alice", "pw-alice-1")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"token", "expiry"}
    expiry = datetime.fromisoformat(body["expiry"])
    assert abs(expiry - (timezone.now() + timedelta(hours=2))) < timedelta(minutes=1)
    assert with_token(body["token"]).get(TODOS).status_code == 200


def test_the_token_response_is_never_cached(alice: Api) -> None:
    response = log_in("alice", "pw-alice-1")

    assert response.status_code == 200
    assert "no-store" in cache_control(response)


def test_a_me_response_showing_the_webhook_secret_is_never_cached(
    alice: Api, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE = True

    shown = alice.patch("me/", {"webhook_url": "http://127.0.0.1:9/hook"})
    rotated = alice.patch("me/", {"rotate_webhook_secret": True})

    for response in (shown, rotated):
        assert response.status_code == 200, response.json()
        assert "webhook_secret" in response.json()
        assert "no-store" in cache_control(response)


def test_revoking_a_token_ends_it_and_leaves_the_other_devices_token(alice: Api) -> None:
    second = log_in("alice", "pw-alice-1").json()["token"]

    response = with_token(second).delete(TOKEN_URL)

    assert response.status_code == 204
    after = with_token(second).get(TODOS)
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "authentication_failed"
    assert alice.get("todos/").status_code == 200  # the first device's token


@pytest.mark.parametrize("signed_in_by", ["nobody", "session"])
def test_revoking_needs_a_token(alice: Api, signed_in_by: str) -> None:
    client = anonymous()
    if signed_in_by == "session":
        client.force_login(alice.user)  # a session has no token to revoke

    response = client.delete(TOKEN_URL)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert AuthToken.objects.filter(user=alice.user).count() == 1


def test_an_expired_token_is_a_401_and_is_deleted(alice: Api) -> None:
    key = log_in("alice", "pw-alice-1").json()["token"]
    row = AuthToken.objects.get(token_key=key[:15])
    AuthToken.objects.filter(pk=row.pk).update(expiry=timezone.now() - timedelta(seconds=1))

    response = with_token(key).get(TODOS)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert not AuthToken.objects.filter(pk=row.pk).exists()


def test_the_database_keeps_a_hash_of_the_key_never_the_key(alice: Api) -> None:
    key = log_in("alice", "pw-alice-1").json()["token"]

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM knox_authtoken WHERE token_key = %s", [key[:15]])
        columns = [c.name for c in cursor.description]
        [row] = cursor.fetchall()
    stored = dict(zip(columns, row, strict=True))

    assert not any(key in str(value) for value in stored.values())
    assert stored["digest"] == hashlib.sha512(key.encode()).hexdigest()
    assert len(key) == 64
    assert stored["token_key"] == key[:15]  # a prefix: 60 of the key's 256 bits


def _old_token_table(key: str, user_id: int) -> None:
    """Create DRF's token table as an install that had ``rest_framework.authtoken`` has it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamptz,"
            " user_id integer NOT NULL UNIQUE)"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, now(), %s)", [key, user_id])


def test_the_migration_deletes_the_clear_text_keys_of_drfs_old_table(alice: Api) -> None:
    old_key = "f" * 40
    _old_token_table(old_key, alice.user.pk)

    with connection.schema_editor() as editor:
        migration.forget_drf_tokens(django_apps, editor)

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone() == (0,)
    assert with_token(old_key).get(TODOS).status_code == 401


def test_the_migration_passes_over_a_database_that_never_had_drf_tokens() -> None:
    assert "authtoken_token" not in connection.introspection.table_names()

    with connection.schema_editor() as editor:
        migration.forget_drf_tokens(django_apps, editor)

    assert "authtoken_token" not in connection.introspection.table_names()
