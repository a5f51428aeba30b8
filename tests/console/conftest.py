"""Fixtures of the console's tests: process heartbeats as the worker and beat write them."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from apps.console.heartbeats import record_heartbeat
from apps.console.models import Heartbeat
from tests.support import worker as worker_support


@pytest.fixture
def processes_alive(db: None) -> None:
    """A worker and a beat that have just recorded their heartbeats."""
    record_heartbeat(kind=Heartbeat.Kind.WORKER, hostname="celery@web-test", pid=101)
    record_heartbeat(kind=Heartbeat.Kind.BEAT, hostname="web-test", pid=102)


@pytest.fixture
def no_other_worker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Freeze the session's worker, if this test process started one, and forget the worker
    heartbeats recorded so far: the only worker that beats is the test's own. The session's
    worker is thawed after the test.

    A frozen (SIGSTOP) worker is also what a hung one looks like: it stops beating."""
    pid = None
    if worker_support.session_worker_started:
        pid = request.getfixturevalue("celery_worker").process.pid
        os.kill(pid, signal.SIGSTOP)
    try:
        Heartbeat.objects.filter(kind=Heartbeat.Kind.WORKER).delete()
        yield
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
