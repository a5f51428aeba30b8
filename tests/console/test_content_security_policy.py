"""The admin and the API docs are served under a Content-Security-Policy and still render:
scripts and styles from this origin only, inline ones only with the response's nonce."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.http import HttpResponseBase
from django.test import Client

pytestmark = pytest.mark.django_db
TAG = re.compile(rb"<(script|style)\b([^>]*)>")
SRC = re.compile(rb'\bsrc="([^"]*)"')


def _directives(response: HttpResponseBase) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    parts = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in parts}


def _nonce(directives: dict[str, list[str]], name: str) -> str:
    [nonce] = [v[len("'nonce-") : -1] for v in directives[name] if v.startswith("'nonce-")]
    return nonce


@pytest.fixture
def operator() -> Client:
    user = get_user_model().objects.create_superuser("olivia", "olivia@example.test", "pw-1")
    client = Client()
    client.force_login(user)
    return client


def test_swagger_ui_renders_with_a_nonce_on_every_inline_script_and_style() -> None:
    page = Client().get("/api/docs/")

    assert page.status_code == 200
    policy = _directives(page)
    assert policy["default-src"] == ["'self'"]
    nonce = _nonce(policy, "script-src")
    assert _nonce(policy, "style-src") == nonce
    tags = TAG.findall(page.content)
    assert [name for name, _ in tags].count(b"script") == 3  # two bundles and the set-up
    assert all(f'nonce="{nonce}"'.encode() in attributes for _, attributes in tags), tags
    # Nothing from another origin: every script is a static file of this install, or inline.
    sources = [m.group(1) for _, attributes in tags if (m := SRC.search(attributes))]
    assert sources
    assert all(source.startswith(b"/static/") for source in sources), sources
    assert b"SwaggerUIBundle(" in page.content


def test_each_response_has_its_own_nonce() -> None:
    first, second = Client().get("/api/docs/"), Client().get("/api/docs/")

    first_nonce = _nonce(_directives(first), "script-src")
    assert first_nonce != _nonce(_directives(second), "script-src")
    assert f'nonce="{first_nonce}"'.encode() not in second.content


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/resilience/deadletter/",
        "/admin/resilience/delivery/",
        "/admin/eventstore/outboxmessage/",
    ],
)
def test_the_admin_renders_under_the_policy_with_no_inline_code(
    operator: Client, path: str
) -> None:
    page = operator.get(path)

    assert page.status_code == 200
    policy = _directives(page)
    assert policy["script-src"] == ["'self'"]  # no page of the admin needs inline script
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    for name, attributes in TAG.findall(page.content):
        assert name == b"script", attributes  # no inline <style> it would block
        assert SRC.search(attributes), attributes  # no inline <script> either


def test_the_login_page_is_under_the_policy_too() -> None:
    page = Client().get("/admin/login/")

    assert page.status_code == 200
    assert _directives(page)["default-src"] == ["'self'"]
