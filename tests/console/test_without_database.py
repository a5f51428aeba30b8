"""With the database away, the web process is still alive (/health/ 200) but not ready."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.broker import free_port
from tests.support.waiting import wait_until
from tests.support.worker import ROOT


@pytest.fixture
def web_without_database(tmp_path: Path) -> Iterator[str]:
    """A gunicorn whose database is a port nothing listens on; return its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/nowhere",
        "PYTHONPATH": str(ROOT),
    }
    command = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi", "--bind"]
    with (tmp_path / "gunicorn.log").open("wb") as log:
        process = subprocess.Popen(
            [*command, f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=10)
    except httpx.TransportError:
        return None


def test_without_the_database_health_is_200_unavailable_and_ready_is_503(
    web_without_database: str,
) -> None:
    health = wait_until(lambda: _get(f"{web_without_database}/health/"), timeout=60)
    ready = httpx.get(f"{web_without_database}/ready/", timeout=10)

    assert health.status_code == 200
    assert ready.status_code == 503
    for body in (health.json(), ready.json()):
        assert body["status"] == "unavailable"
        assert body["failing"] == ["database", "worker", "beat"]
        assert body["processes"] == {
            "worker": {"ok": False, "error": "unknown: the database does not answer"},
            "beat": {"ok": False, "error": "unknown: the database does not answer"},
        }
