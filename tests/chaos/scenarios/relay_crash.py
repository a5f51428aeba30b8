"""Scenario 2: the relay's crash window. Commands flow while the processes that publish the
outbox die at random points:

- every relay batch (the on-commit relay in a gunicorn worker, the beat sweep in a Celery
  worker) exits its process with probability ``CRASH_RATE`` right after sending its
  messages and before marking its rows published (``EVENTSTORE_RELAY_CRASH_RATE``, a
  fault-injection setting): the rows stay unpublished, the sweep sends them again;
- a random gunicorn worker gets SIGKILL every ``KILL_EVERY`` (8) seconds, wherever it is.

A request whose process died gets no answer: a create is sent again with its idempotency
key, anything else ends "failed" (it may well have taken effect). Every acknowledged
command must have its event, every event its deliveries, each effect once. QUICK: 150
commands at 15 a second (10 s); full: 1,500 at the same rate.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from typing import Any

from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.load import Load
from tests.chaos.scenarios.common import Users, base_url, row, set_email

NUMBER = 2
NAME = "relay-crash"
CRASH_RATE = 0.05
ENV = {"EVENTSTORE_RELAY_CRASH_RATE": str(CRASH_RATE)}
KILL_EVERY = 8.0
PER_SECOND = 15.0  # QUICK and full alike
CRASH_LINE = "fault injection: the relay exits between sending and marking published"


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import RECONCILER_THRESHOLD, REDIS_URL

    url = base_url(cluster.port)
    set_email(url, users.api)
    stop = threading.Event()
    kills: list[int] = []
    killer = threading.Thread(
        target=_kill_web_workers, args=(cluster, random.Random(seed), stop, kills), name="killer"
    )
    killer.start()
    try:
        commands = Load(url, users.api, seed, PER_SECOND, quick=quick).run(150 if quick else 1500)
    finally:
        stop.set()
        killer.join()
    seconds, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
    report = account(commands)
    crashes = {
        proc.name: proc.log.read_text(errors="replace").count(CRASH_LINE)
        for proc in [cluster.web, *cluster.workers]
    }
    # Proof that the window was hit in both kinds of relay: the request's and the sweep's.
    if not crashes["web"]:
        report.problems.append("no on-commit relay died in the window: was the fault injected?")
    if not sum(crashes.values()) - crashes["web"]:
        report.problems.append("no sweep died in the window: was the fault injected?")
    if report.dead_letters:
        report.problems.append(f"{report.dead_letters} dead letters with no handler failure")
    summary = f"relay deaths in the window {crashes}, {len(kills)} gunicorn workers killed"
    return row(NAME, report, seconds, left, summary)


def _kill_web_workers(
    cluster: processes.Cluster, rng: random.Random, stop: threading.Event, kills: list[int]
) -> None:
    """SIGKILL a random gunicorn worker every KILL_EVERY seconds (its master starts another)."""
    while not stop.wait(KILL_EVERY):
        if cluster.web.popen is None:
            continue
        workers = processes.children(cluster.web.popen.pid)
        if workers:
            pid = rng.choice(workers)
            try:
                os.kill(pid, signal.SIGKILL)
                kills.append(pid)
            except ProcessLookupError:
                pass
