"""The unauthenticated operational pages: health, the OpenAPI schema and its docs."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from tests.support.broker import free_port

pytestmark = pytest.mark.django_db


@pytest.mark.usefixtures("processes_alive")
@pytest.mark.parametrize("path", ["/health/", "/ready/"])
def test_health_and_ready_report_every_store_and_process_ok(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "cache": True,
        "broker": True,
    }
    assert {name: process["ok"] for name, process in body["processes"].items()} == {
        "worker": True,
        "beat": True,
    }


@pytest.mark.usefixtures("processes_alive")
def test_ready_reports_each_stores_latency_in_milliseconds() -> None:
    checks = Client().get("/ready/").json()["checks"]
    assert set(checks) == {"database", "cache", "broker"}
    for check in checks.values():
        assert isinstance(check["ms"], int | float)
        assert 0 <= check["ms"] < 10_000


@pytest.mark.usefixtures("processes_alive")
def test_with_the_cache_down_ready_is_503_naming_it_and_health_stays_200(settings) -> None:
    dead = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    }
    with override_settings(CACHES=dead):
        ready = Client().get("/ready/")
        health = Client().get("/health/")
    assert ready.status_code == 503
    assert health.status_code == 200  # alive: this process answers, whatever it reports
    for body in (ready.json(), health.json()):
        assert body["status"] == "degraded"  # the API still answers without its cache
        assert body["failing"] == ["cache"]
        assert body["checks"]["cache"]["ok"] is False
        assert "ConnectionError" in body["checks"]["cache"]["error"]
        assert body["checks"]["database"]["ok"] is True
        assert body["checks"]["broker"]["ok"] is True
        assert all(isinstance(check["ms"], int | float) for check in body["checks"].values())


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
