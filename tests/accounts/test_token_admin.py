"""Tokens in the console: who, when and until when, never a key; revoked by deleting.

Victor is staff and may view everything; Olivia is a superuser. Neither can read, make or
change a key.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from knox.models import AuthToken

from apps.accounts.services import issue_token
from tests.accounts.conftest import anonymous
from tests.support.api import Api

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:knox_authtoken_changelist")


def console(*, superuser: bool) -> Client:
    """Return a console client: Olivia (superuser) or Victor (staff, every view permission)."""
    users = get_user_model()
    if superuser:
        user = users.objects.create_superuser("olivia", "olivia@example.test", "pw-olivia-1")
    else:
        user = users.objects.create_user("victor", password="pw-victor-1", is_staff=True)
        user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client = Client()
    client.force_login(user)
    return client


def change_url(row: AuthToken) -> str:
    return reverse("admin:knox_authtoken_change", args=[row.pk])


def test_a_viewer_sees_every_tokens_metadata_and_no_key(alice: Api, bob: Api) -> None:
    keys = [alice.token, bob.token, issue_token(user=alice.user).key]
    viewer = console(superuser=False)

    listing = viewer.get(CHANGELIST)
    pages = [viewer.get(change_url(row)) for row in AuthToken.objects.all()]

    assert listing.status_code == 200
    html = listing.content.decode()
    assert "alice" in html
    assert "bob" in html
    assert all(key[:15] in html for key in keys)  # the prefix knox keeps, to tell them apart
    assert len(pages) == 3
    for page in [listing, *pages]:
        assert page.status_code == 200
        assert not any(key in page.content.decode() for key in keys)


def test_not_even_a_superuser_can_make_or_change_a_token_in_the_console(alice: Api) -> None:
    operator = console(superuser=True)
    row = AuthToken.objects.get(user=alice.user)

    assert operator.get(reverse("admin:knox_authtoken_add")).status_code == 403
    assert (
        operator.post(reverse("admin:knox_authtoken_add"), {"user": alice.user.pk}).status_code
        == 403
    )
    operator.post(change_url(row), {"user": alice.user.pk, "expiry": ""})

    assert AuthToken.objects.filter(user=alice.user).count() == 1
    assert AuthToken.objects.get(pk=row.pk).expiry == row.expiry


def test_an_operator_revokes_a_token_by_deleting_it(alice: Api) -> None:
    row = AuthToken.objects.get(user=alice.user)

    response = console(superuser=True).post(
        reverse("admin:knox_authtoken_delete", args=[row.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not AuthToken.objects.exists()
    client = anonymous()
    client.credentials(HTTP_AUTHORIZATION=f"Token {alice.token}")
    assert client.get("/api/v1/todos/").status_code == 401
