"""A real Celery worker in a subprocess, sharing the test database and Redis db."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.db import connection

from tests.support.broker import forget_queues, idle
from tests.support.timings import TEST_TIMINGS
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
# Where the workers of this test process write the mail they send.
MAIL_DIR = Path(tempfile.gettempdir()) / f"backstop-mail-{os.getpid()}"
# Handler modules of the tests, imported by every worker the tests start.
TEST_HANDLER_MODULES = "tests.eventstore.counter,tests.resilience.handlers,tests.sagas.definitions"


@dataclass
class WorkerProcess:
    """A running ``celery worker`` subprocess and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill_group(self) -> None:
        """SIGKILL the worker and every process of its pool, as a crashed machine would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def worker_env(**extra: str) -> dict[str, str]:
    """Return the environment of a subprocess that must use the test database and Redis db."""
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        REDIS_URL=settings.REDIS_URL,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        EVENTSTORE_EXTRA_HANDLER_MODULES=TEST_HANDLER_MODULES,
        PYTHONPATH=str(ROOT),
        **{name: str(value) for name, value in TEST_TIMINGS.items()},
        # Workers write mail to files the tests read (Django's file backend).
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(MAIL_DIR),
    )
    env.update(extra)
    return env


def start_worker(
    tmp_dir: Path,
    *,
    concurrency: int = 2,
    pool: str = "prefork",
    queues: str = "default,handlers,maintenance",
    new_session: bool = False,
    **env: str,
) -> WorkerProcess:
    """Start a worker on every queue and return once it answers a ping.

    ``new_session``: the worker leads a process group of its own, so a test can kill it
    and its pool at once (``kill_group``)."""
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log = tmp_dir / f"{name}.log"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--loglevel",
        "INFO",
        "--hostname",
        name,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--queues",
        queues,
        "--without-gossip",
        "--without-mingle",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=worker_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    worker = WorkerProcess(name, process, log)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{worker.output()}")
        return bool(current_app.control.ping(destination=[name], timeout=0.5))

    try:
        wait_until(answers, timeout=60, message=f"worker {name} to answer a ping")
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.fixture(scope="session", autouse=True)
def _remove_mail_dir() -> Iterator[None]:
    """Remove the mail the workers of this test process sent, once the session ends."""
    yield
    shutil.rmtree(MAIL_DIR, ignore_errors=True)


# Set once the session's worker runs: from then on every transactional test lets it settle.
session_worker_started = False
# The session's worker while it consumes no queue (an in-process test runs its messages).
_paused: WorkerProcess | None = None
_session_worker: WorkerProcess | None = None
CONSUMED_QUEUES = ("default", "handlers", "maintenance")


@pytest.fixture(autouse=True)
def _settle_after_transactional_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Let the session's worker finish a transactional test's messages before the tables are
    flushed, so no handler runs into the next test (or deadlocks with the flush)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not (marker.kwargs.get("transaction") or (marker.args and marker.args[0])):
        yield
        return
    request.getfixturevalue("transactional_db")  # so this teardown runs before the flush
    yield
    if session_worker_started:
        settle()


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: None, django_db_blocker, tmp_path_factory
) -> Iterator[WorkerProcess]:
    """A worker shared by the session's tests (they must be ``transaction=True``)."""
    global session_worker_started, _session_worker
    with django_db_blocker.unblock():
        worker = start_worker(tmp_path_factory.mktemp("worker"), queues=",".join(CONSUMED_QUEUES))
    session_worker_started = True
    _session_worker = worker
    yield worker
    _session_worker = None
    worker.stop()


def pause_session_worker() -> None:
    """Stop the session's worker (if it runs) from taking messages, so the in-process
    worker of the next test gets them all; ``resume_session_worker`` undoes it."""
    global _paused
    if _session_worker is None or _paused is not None:
        return
    settle()
    for queue in CONSUMED_QUEUES:
        _control(current_app.control.cancel_consumer, queue, _session_worker)
    _paused = _session_worker


def resume_session_worker() -> None:
    """Let the session's worker take messages again after ``pause_session_worker``."""
    global _paused
    if _paused is None:
        return
    for queue in CONSUMED_QUEUES:
        _control(current_app.control.add_consumer, queue, _paused)
    _paused = None


def _control(command: Any, queue: str, worker: WorkerProcess) -> None:
    """Send a consumer command to ``worker`` and fail unless it answers."""
    replies = command(queue, destination=[worker.name], reply=True, timeout=10)
    if not replies:
        raise RuntimeError(f"worker {worker.name} did not answer {command.__name__}({queue!r})")


def settle(timeout: float = 20.0) -> None:
    """Let the worker finish what a test started, so nothing runs into the next test.

    Waits until the consumed queues are empty and the worker holds none of their messages
    (running, or waiting for a countdown); whatever is still pending then (a job deferred
    behind a forced-open breaker) is revoked by its stable task id, and its queued copies
    and the broker's record of those a worker holds are dropped.
    """
    from apps.eventstore.relay import delivery_task_id
    from apps.resilience.models import Delivery

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    if _paused is not None:  # no worker takes messages: drop what a test left behind
        client.delete(*CONSUMED_QUEUES)
        return

    try:
        wait_until(
            lambda: idle(client, CONSUMED_QUEUES), timeout=timeout, message="the worker to settle"
        )
    except AssertionError:
        pending = Delivery.objects.exclude(status__in=["succeeded", "dead_lettered", "parked"])
        ids = [delivery_task_id(d.handler, d.event_id) for d in pending]
        if ids:
            current_app.control.revoke(ids)
        forget_queues(settings.CELERY_BROKER_URL, *CONSUMED_QUEUES)
