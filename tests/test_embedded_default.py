"""`make run`'s embedded default: SQLite + filesystem broker, no services, boots and works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.broker import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.smoke
ROOT = Path(__file__).resolve().parents[1]
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
SAVE_A_COUNTER = """
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext
from tests.eventstore.counter import Counter
[opened] = Repository(Counter).save(Counter.open("smoke"), CommandContext())
print(opened.event_id)
"""


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(
        # As `make run` does: DEBUG is off unless the environment turns it on.
        DEBUG="1",
        BACKSTOP_VAR_DIR=str(tmp_path / "var"),
        EVENTSTORE_EXTRA_HANDLER_MODULES="tests.eventstore.counter",
        PYTHONPATH=str(ROOT),
    )
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def processes(embedded_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, object]]:
    _manage(embedded_env, "migrate", "--noinput")
    port = free_port()
    bin_dir = Path(sys.executable).parent
    commands = {
        "web": [str(bin_dir / "gunicorn"), "config.wsgi", "--bind", f"127.0.0.1:{port}"],
        "worker": [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--loglevel",
            "INFO",
            "--queues",
            "default,handlers,maintenance",
            "--concurrency",
            "1",
        ],
    }
    # Run from an empty directory: everything the processes write must land in the var dir.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    running: dict[str, object] = {"port": port, "cwd": workdir}
    try:
        for name, command in commands.items():
            log = (tmp_path / f"{name}.log").open("wb")
            running[name] = subprocess.Popen(
                command, cwd=workdir, env=embedded_env, stdout=log, stderr=subprocess.STDOUT
            )
            running[f"{name}_log"] = tmp_path / f"{name}.log"
        yield running
    finally:
        for name in commands:
            process = running.get(name)
            if isinstance(process, subprocess.Popen):
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


def _health(port: int) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health/", timeout=2)
    except httpx.TransportError:
        return None


def test_the_embedded_default_serves_health_and_a_worker_consumes_events(
    processes: dict[str, object], embedded_env: dict[str, str]
) -> None:
    response = wait_until(lambda: _health(processes["port"]), timeout=60, message="web to answer")
    assert response.status_code == 200, response.text
    assert {name: check["ok"] for name, check in response.json()["checks"].items()} == {
        "database": True,
        "cache": True,
        "broker": True,
    }

    event_id = _manage(embedded_env, "shell", "-c", SAVE_A_COUNTER).strip()

    worker_log: Path = processes["worker_log"]
    expected = "delivered test.counter.opened"
    wait_until(lambda: expected in worker_log.read_text(), timeout=60, message="the worker")
    # The embedded broker's URL names a host, so kombu does not warn that it had to pick one.
    assert "No hostname was supplied" not in worker_log.read_text()
    assert event_id
    assert (Path(embedded_env["BACKSTOP_VAR_DIR"]) / "backstop.sqlite3").exists()
    assert sorted(p.name for p in processes["cwd"].iterdir()) == []  # no ./control, no files


READ_CORRELATED = """
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext, read_correlated
from tests.eventstore.counter import Counter
context = CommandContext()
for label in ("one", "two"):
    Repository(Counter).save(Counter.open(label), context)
Repository(Counter).save(Counter.open("elsewhere"), CommandContext())
print(len(read_correlated([context.correlation_id])))
"""


def test_the_embedded_default_reads_events_by_correlation_id(
    embedded_env: dict[str, str],
) -> None:
    """SQLite compares a JSON key unlike PostgreSQL: the related history must work on both."""
    _manage(embedded_env, "migrate", "--noinput")

    assert _manage(embedded_env, "shell", "-c", READ_CORRELATED).strip().splitlines()[-1] == "2"


LIST_ROWS = """
import json, uuid
from datetime import UTC, datetime, timedelta
from django.utils import timezone
from apps.todos import selectors
from apps.todos.api.rows import list_row
from apps.todos.api.serializers import TodoViewSerializer
from apps.todos.models import TodoView
awkward = 'say "hi" \\\\ C:\\\\path' + chr(10) + chr(9) + 'caf\u00e9 \U0001f389 \u2028 \x01'
when = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
common = dict(generation=1, owner_id=7, priority="high", priority_rank=2, version=3)
TodoView.objects.create(
    **common, todo_id=uuid.uuid4(), title=awkward, description=awkward, tags=[awkward, "b"],
    status="completed", due_at=when, recurrence="FREQ=DAILY", series_id=uuid.uuid4(),
    created_at=when - timedelta(microseconds=1), updated_at=when,
    completed_at=when + timedelta(microseconds=120_000),
    deleted_at=datetime(1, 1, 1, tzinfo=UTC),
)
TodoView.objects.create(
    **common, todo_id=uuid.uuid4(), title="plain", status="open",
    due_at=timezone.now() - timedelta(days=1), created_at=when, updated_at=when,
    deleted_at=datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
)
listed = selectors.todos_of(7).order_by("id")
print(json.dumps({
    "rows": [json.loads(d) for d in listed.annotate(doc=list_row()).values_list("doc", flat=True)],
    "serialized": [TodoViewSerializer(view).data for view in listed],
}))
"""


def test_the_embedded_default_renders_list_rows_as_the_serializer(
    embedded_env: dict[str, str],
) -> None:
    """SQLite keeps UUIDs and dates unlike PostgreSQL: the list's rows render alike on both."""
    _manage(embedded_env, "migrate", "--noinput")

    out = json.loads(_manage(embedded_env, "shell", "-c", LIST_ROWS).strip().splitlines()[-1])

    assert len(out["rows"]) == 2
    assert out["rows"] == out["serialized"]
    assert [list(row) for row in out["rows"]] == [list(row) for row in out["serialized"]]
    assert [row["is_overdue"] for row in out["rows"]] == [False, True]
    assert "\n\tcaf\u00e9 \U0001f389 \u2028 \x01" in out["rows"][0]["title"]
