"""/health/ and /ready/ read the worker's and beat's heartbeats: missing or stale is down."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from apps.console.heartbeats import record_heartbeat
from apps.console.models import Heartbeat
from tests.support.worker import ROOT

# A worker the test process runs for other tests would beat here too: it is frozen.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_other_worker")]


def _heartbeat(kind: str, hostname: str, *, seconds_ago: float, pid: int = 7) -> None:
    last_seen = timezone.now() - timedelta(seconds=seconds_ago)
    Heartbeat.objects.create(kind=kind, hostname=hostname, pid=pid, last_seen=last_seen)


def test_without_any_heartbeat_ready_is_503_naming_worker_and_beat_and_health_stays_200() -> None:
    ready = Client().get("/ready/")
    health = Client().get("/health/")

    assert ready.status_code == 503
    assert health.status_code == 200
    for body in (ready.json(), health.json()):
        assert body["status"] == "degraded"
        assert body["failing"] == ["worker", "beat"]
        assert body["processes"] == {
            "worker": {"ok": False, "error": "no heartbeat recorded"},
            "beat": {"ok": False, "error": "no heartbeat recorded"},
        }


def test_a_heartbeat_older_than_the_threshold_is_stale_and_named(settings) -> None:
    settings.HEARTBEAT_STALE_SECONDS = 60
    _heartbeat("worker", "celery@gone", seconds_ago=120, pid=4242)
    record_heartbeat(kind="beat", hostname="here", pid=1)

    response = Client().get("/ready/")

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["worker"]
    worker = body["processes"]["worker"]
    assert worker["ok"] is False
    assert (worker["hostname"], worker["pid"]) == ("celery@gone", 4242)
    assert 120 <= worker["age_seconds"] < 180
    assert worker["error"].startswith("stale: last heartbeat 12")
    assert body["processes"]["beat"]["ok"] is True
    assert body["processes"]["beat"]["age_seconds"] < 60


def test_the_freshest_heartbeat_of_a_kind_speaks_for_it(processes_alive: None) -> None:
    _heartbeat("worker", "celery@old-host", seconds_ago=3600)

    response = Client().get("/ready/")

    assert response.status_code == 200
    assert response.json()["processes"]["worker"]["hostname"] == "celery@web-test"


def test_recording_again_overwrites_the_row_of_that_process_only() -> None:
    record_heartbeat(kind="worker", hostname="celery@a", pid=1)
    first = Heartbeat.objects.get(kind="worker", hostname="celery@a").last_seen

    record_heartbeat(kind="worker", hostname="celery@a", pid=2)  # restarted: a new pid
    record_heartbeat(kind="worker", hostname="celery@b", pid=3)
    record_heartbeat(kind="beat", hostname="celery@a", pid=4)

    rows = Heartbeat.objects.order_by("kind", "hostname").values_list("kind", "hostname", "pid")
    assert list(rows) == [
        ("beat", "celery@a", 4),
        ("worker", "celery@a", 2),
        ("worker", "celery@b", 3),
    ]
    assert Heartbeat.objects.get(kind="worker", hostname="celery@a").last_seen > first


def test_head_answers_each_status_without_a_body(processes_alive: None) -> None:
    for path in ("/health/", "/ready/"):
        response = Client().head(path)
        assert (response.status_code, response.content) == (200, b"")

    Heartbeat.objects.filter(kind="beat").delete()

    assert Client().head("/ready/").status_code == 503
    assert Client().head("/health/").status_code == 200


def test_ready_like_health_is_not_redirected_to_https() -> None:
    with override_settings(SECURE_SSL_REDIRECT=True):
        client = Client()
        assert client.get("/api/schema/").status_code == 301  # the redirect is on
        assert client.get("/ready/").status_code == 503  # answered over http: no beat
        assert client.get("/health/").status_code == 200


def test_a_stale_threshold_not_longer_than_the_interval_is_refused_at_start_up() -> None:
    env = {**os.environ, "HEARTBEAT_SECONDS": "30", "HEARTBEAT_STALE_SECONDS": "30"}
    result = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "HEARTBEAT_STALE_SECONDS must be longer than HEARTBEAT_SECONDS" in result.stderr
