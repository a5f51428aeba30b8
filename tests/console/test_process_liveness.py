"""Real worker and beat processes: /ready/ sees each alive by its heartbeat, and names it
once it stopped and its heartbeat went stale."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from celery import current_app
from django.test import Client

from tests.support.beat import start_beat
from tests.support.broker import free_port
from tests.support.waiting import wait_until
from tests.support.worker import start_worker

pytestmark = pytest.mark.django_db(transaction=True)
# The processes started here beat every half second; the test process calls a heartbeat
# stale after three (HEARTBEAT_STALE_SECONDS): a stopped process is reported within seconds.
FAST = {"HEARTBEAT_SECONDS": "0.5"}
STALE_SECONDS = 3.0
# A queue no message is sent to: the tests' workers are there to beat, not to work.
IDLE_QUEUE = "console-heartbeat-idle"


@pytest.fixture(autouse=True)
def _small_stale_threshold(settings: Any) -> None:
    settings.HEARTBEAT_STALE_SECONDS = STALE_SECONDS


def _ready() -> tuple[int, dict[str, Any]]:
    response = Client().get("/ready/")
    return response.status_code, response.json()


def _process(kind: str) -> dict[str, Any]:
    return _ready()[1]["processes"][kind]


@pytest.mark.usefixtures("no_other_worker")
def test_ready_reports_a_running_worker_then_503_naming_it_once_it_stopped(
    tmp_path: Path,
) -> None:
    worker = start_worker(tmp_path, concurrency=1, queues=IDLE_QUEUE, **FAST)
    try:
        alive = wait_until(
            lambda: (p := _process("worker"))["ok"] and p["hostname"] == worker.name and p,
            timeout=60,
            message="the worker's heartbeat",
        )
        assert alive["pid"] == worker.process.pid
        assert alive["age_seconds"] < STALE_SECONDS
        assert "worker" not in _ready()[1]["failing"]
    finally:
        worker.stop()
    assert worker.process.returncode == 0, worker.output()

    _, body = wait_until(
        lambda: (answer := _ready())[0] == 503 and "worker" in answer[1]["failing"] and answer,
        timeout=60,
        message="/ready/ to name the stopped worker",
    )
    assert body["status"] == "degraded"
    stale = body["processes"]["worker"]
    assert (stale["hostname"], stale["pid"]) == (worker.name, worker.process.pid)
    assert stale["error"].startswith("stale: last heartbeat")
    assert stale["age_seconds"] >= STALE_SECONDS


def test_ready_reports_a_running_beat_then_503_naming_it_once_it_stopped(
    tmp_path: Path,
) -> None:
    # Beat's periodic messages go to a filesystem broker of its own, never to the suite's
    # workers: only its heartbeat, written to the test database, matters here.
    beat = start_beat(
        tmp_path, CELERY_BROKER_URL="filesystem://", BACKSTOP_VAR_DIR=str(tmp_path), **FAST
    )
    try:

        def beating() -> dict[str, Any] | None:
            if beat.process.poll() is not None:
                raise AssertionError(f"beat exited:\n{beat.output()}")
            process = _process("beat")
            return process if process["ok"] and process["pid"] == beat.process.pid else None

        alive = wait_until(beating, timeout=60, message="beat's heartbeat")
        assert alive["hostname"] == socket.gethostname()
        # Still beating several heartbeats later: the tick keeps writing, not only the first.
        first_seen = alive["last_seen"]
        wait_until(
            lambda: (p := _process("beat"))["ok"] and p["last_seen"] != first_seen,
            timeout=30,
            message="a later beat heartbeat",
        )
    finally:
        beat.stop()

    _, body = wait_until(
        lambda: (answer := _ready())[0] == 503 and "beat" in answer[1]["failing"] and answer,
        timeout=60,
        message="/ready/ to name the stopped beat",
    )
    stale = body["processes"]["beat"]
    assert stale["pid"] == beat.process.pid
    assert stale["error"].startswith("stale: last heartbeat")


def test_a_worker_that_cannot_reach_the_database_keeps_running_and_says_why(
    tmp_path: Path,
) -> None:
    nowhere = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    worker = start_worker(tmp_path, concurrency=1, queues=IDLE_QUEUE, DATABASE_URL=nowhere, **FAST)
    try:
        warning = f"could not record the worker heartbeat of {worker.name}"
        wait_until(
            lambda: worker.output().count(warning) >= 3,  # at start, then on the timer
            timeout=60,
            message="the worker to report its failed heartbeats",
        )
        assert worker.process.poll() is None
        assert current_app.control.ping(destination=[worker.name], timeout=5)
    finally:
        worker.stop()
