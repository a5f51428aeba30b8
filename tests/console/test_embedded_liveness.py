"""`make run`'s Procfile on the embedded default (SQLite, filesystem broker): the worker's
bootstep and beat's scheduler beat there too, and gunicorn answers HEAD without a body."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.broker import free_port
from tests.support.waiting import wait_until
from tests.support.worker import ROOT

pytestmark = pytest.mark.smoke
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")


@dataclass
class Honcho:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def honcho(tmp_path: Path) -> Iterator[Honcho]:
    """``honcho start -f Procfile`` as ``make run`` runs it, on an embedded default of its own."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    bin_dir = Path(sys.executable).parent
    env.update(
        DEBUG="1",
        HOST="127.0.0.1",
        WORKER_CONCURRENCY="1",
        BACKSTOP_VAR_DIR=str(tmp_path / "var"),
        PATH=f"{bin_dir}:{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=180,
    )
    (tmp_path / "empty.env").write_text("")
    port, log = free_port(), tmp_path / "honcho.log"
    command = [
        str(bin_dir / "honcho"),
        "start",
        "-f",
        "Procfile",
        "-e",
        str(tmp_path / "empty.env"),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the teardown reaches every child
        )
    try:
        yield Honcho(process, port, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):  # whatever outlived honcho
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.TransportError:
        return None


def _raw_head(port: int, path: str) -> bytes:
    """Send HEAD and return every byte the server sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_procfile_on_the_embedded_default_is_ready_with_worker_and_beat_beating(
    honcho: Honcho,
) -> None:
    def ready() -> httpx.Response | None:
        if honcho.process.poll() is not None:
            raise AssertionError(f"honcho exited:\n{honcho.output()}")
        response = _get(honcho.port, "/ready/")
        return response if response is not None and response.status_code == 200 else None

    response = wait_until(ready, timeout=120, message="/ready/ to answer 200 on the Procfile")
    processes = response.json()["processes"]
    assert processes["worker"]["ok"] is True
    assert processes["worker"]["hostname"].startswith("celery@")
    assert processes["beat"]["ok"] is True
    assert response.json()["checks"]["broker"]["ok"] is True

    for path in ("/ready/", "/health/"):
        raw = _raw_head(honcho.port, path)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), raw
        assert body == b""
    # gunicorn drops a HEAD response's body itself, but warns for every one it gets.
    assert "no-body response" not in honcho.output()
