"""The front page at / says what Backstop is, links the console, the API docs and the probes,
and shows the first API calls with the token flow, under the Content-Security-Policy."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_front_page_links_the_console_the_docs_and_the_probes() -> None:
    page = Client().get("/")

    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    text = page.content.decode()
    for href in ("/admin/", "/api/docs/", "/health/", "/ready/"):
        assert f'href="{href}"' in text, href
    assert "event-sourced to-do back end" in text


def test_the_front_page_shows_the_token_flow_with_this_servers_address() -> None:
    text = Client().get("/", HTTP_HOST="localhost:8000").content.decode()

    assert "curl -s -X POST http://localhost:8000/api/v1/auth/token/" in text
    assert "-H 'Content-Type: application/json'" in text
    assert '{"username": "admin", "password": "…"}' in text
    assert "jq -r .token" in text
    assert 'H="Authorization: Token $TOKEN"' in text
    assert 'curl -s http://localhost:8000/api/v1/todos/ -H "$H"' in text
    assert "make changepassword" in text


def test_the_inline_style_carries_the_responses_nonce() -> None:
    page = Client().get("/")

    [style_src] = [d for d in page["Content-Security-Policy"].split(";") if "style-src" in d]
    [nonce] = re.findall(r"'nonce-([^']+)'", style_src)
    assert f'<style nonce="{nonce}">' in page.content.decode()
    assert "<script" not in page.content.decode()


def test_head_answers_and_other_methods_are_refused() -> None:
    assert Client().head("/").status_code == 200
    assert Client().post("/").status_code == 405


def test_the_admins_view_site_link_is_the_front_page() -> None:
    operator = get_user_model().objects.create_superuser("olivia", "olivia@example.test", "pw")
    client = Client()
    client.force_login(operator)

    assert admin.site.site_url == reverse("front-page") == "/"
    assert b'<a href="/">View site</a>' in client.get("/admin/").content
