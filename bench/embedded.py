"""The embedded default (SQLite and kombu's filesystem broker, what ``make run`` starts):
how soon a client sees its own writes in the read model.

No baseline: these rows hold the embedded default to absolute limits a person trying
Backstop would notice (a created todo listed within 200 ms, a 1,000-item bulk in 30 s).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import ROOT, Measured, Processes, Result, repeat, wait_for

SERVICES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
USER, PASSWORD = "bench-embedded", "pw-bench-embedded-1"
BULK = 1000


def embedded(processes: Processes, repeats: int) -> list[Result]:
    """Start web and worker on a fresh embedded default; measure create and bulk latency."""
    var = Path(tempfile.mkdtemp(prefix="backstop-embedded-"))
    env = _environment(var)
    try:
        _manage(env, "migrate", "--noinput")
        _manage(env, "shell", "-c", _CREATE_USER)
        base = _start(processes, env)
        with httpx.Client(base_url=base, timeout=30) as http:
            http.headers["Authorization"] = f"Token {_token(http)}"
            single = repeat(lambda: _create_and_see(http), repeats)
            bulk = Measured.of([_bulk_and_see(http, var / "backstop.sqlite3")])
    finally:
        processes.stop_all()
        shutil.rmtree(var, ignore_errors=True)
    return [
        Result(
            "embedded default: a created todo is listed",
            "ms",
            single,
            None,
            "≤ 200 ms",
            single.median <= 200,
        ),
        Result(
            "embedded default: a 1,000-item bulk is in the read model",
            "s",
            bulk,
            None,
            "≤ 30 s",
            bulk.median <= 30,
        ),
    ]


def _environment(var: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICES}
    env.update(BACKSTOP_VAR_DIR=str(var), DEBUG="1", LOG_LEVEL="WARNING")
    return env


_CREATE_USER = (
    "from django.contrib.auth import get_user_model; "
    f"get_user_model().objects.create_user({USER!r}, password={PASSWORD!r})"
)


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True
    )


def _start(processes: Processes, env: dict[str, str]) -> str:
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    processes.start(
        str(bin_dir / "gunicorn"),
        "config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        log="embedded-web",
        env=env,
    )
    processes.start(
        sys.executable,
        *("-m", "celery", "-A", "config", "worker", "--loglevel", "WARNING"),
        *("--concurrency", "2", "--queues", "default,handlers,maintenance"),
        log="embedded-worker",
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base), timeout=60, what="the embedded web process", every=0.2)
    return base


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/schema/", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _token(http: httpx.Client) -> str:
    response = http.post("/api/v1/auth/token/", json={"username": USER, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["token"])


def _create_and_see(http: httpx.Client) -> float:
    """POST one todo; return milliseconds until the list (the read model) shows it."""
    started = time.perf_counter()
    response = http.post("/api/v1/todos/", json={"title": "try me"})
    response.raise_for_status()
    todo_id = response.json()["id"]

    def listed() -> bool:
        page = http.get("/api/v1/todos/", params={"page_size": 5}).json()
        return any(row["id"] == todo_id for row in page["results"])

    wait_for(listed, timeout=60, what="the todo to be listed", every=0.005)
    return (time.perf_counter() - started) * 1000


def _bulk_and_see(http: httpx.Client, database: Path) -> float:
    """POST a 1,000-item bulk; return seconds until all of it is in the read model."""
    before = _projected(database)
    started = time.perf_counter()
    items = [{"title": f"bulk {n}"} for n in range(BULK)]
    http.post("/api/v1/todos/bulk/", json={"items": items}).raise_for_status()
    wait_for(
        lambda: _projected(database) >= before + BULK,
        timeout=300,
        what="the bulk to reach the read model",
        every=0.2,
    )
    return time.perf_counter() - started


def _projected(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        return int(db.execute("SELECT count(*) FROM todos_todoview").fetchone()[0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
