"""The unauthenticated operational pages: health, the OpenAPI schema and its docs."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from tests.support.broker import free_port

pytestmark = pytest.mark.django_db


def test_health_reports_every_store_ok() -> None:
    response = Client().get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "cache": True,
        "broker": True,
    }


def test_health_is_503_degraded_and_names_the_cache_when_the_cache_is_down(settings) -> None:
    dead = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    }
    with override_settings(CACHES=dead):
        response = Client().get("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"  # the API still answers without its cache
    assert body["failing"] == ["cache"]
    assert body["checks"]["cache"]["ok"] is False
    assert "ConnectionError" in body["checks"]["cache"]["error"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True


def test_the_schema_and_swagger_ui_are_served_without_a_cdn() -> None:
    schema = Client().get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/todos/" in schema.content
    docs = Client().get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()
    assert b"swagger-ui" in docs.content


def test_an_unknown_api_url_is_a_json_404_in_the_error_shape() -> None:
    response = Client().get("/api/v1/todos/not-a-uuid/")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "Not found.", "fields": {}}
    }
    assert Client().get("/nowhere/").status_code == 404
