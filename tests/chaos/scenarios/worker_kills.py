"""Scenario 1: worker kills. Commands flow while a random worker child is SIGKILLed every
2 s and a whole worker (main process and pool) every 10 s, then restarted."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import httpx

from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.load import Load

CHILD_EVERY, MAIN_EVERY = 2.0, 10.0
# 500 commands take 40 s: about 16 child kills and 4 worker kills land while they flow.
PER_SECOND = 12.5


def run(cluster: processes.Cluster, token: str, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import RECONCILER_THRESHOLD, REDIS_URL

    base_url = f"http://127.0.0.1:{cluster.port}"
    _set_email(base_url, token)
    n = 500 if quick else 5000
    stop = threading.Event()
    killer = Killer(cluster, random.Random(seed), stop)
    thread = threading.Thread(target=killer.run, name="killer")
    thread.start()
    try:
        commands = Load(base_url, token, seed, PER_SECOND).run(n)
    finally:
        stop.set()
        thread.join()
    seconds, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
    report = account(commands)
    if left:
        report.problems.append(f"not drained within the deadline: {left}")
    verdict = "pass" if not (report.problems or report.lost or report.duplicated) else "fail"
    print(
        f"worker-kills: {killer.child_kills} child kills, {killer.main_kills} worker kills;"
        f" outcomes {report.outcomes}"
    )
    for problem in report.problems:
        print(f"  {problem}")
    return {
        "scenario": "worker-kills",
        "commands": report.commands,
        "events": report.events,
        "handler_runs": report.handler_runs,
        "retries": report.retries,
        "dead_letters": report.dead_letters,
        "lost": report.lost,
        "duplicated": report.duplicated,
        "drain_seconds": seconds,
        "verdict": verdict,
        "problems": report.problems,
    }


def _set_email(base_url: str, token: str) -> None:
    """Give the user an email address, so email reminders have somewhere to go."""
    response = httpx.patch(
        f"{base_url}/api/v1/me/",
        json={"email": "chaos@example.com"},
        headers={"Authorization": f"Token {token}"},
        timeout=15,
    )
    response.raise_for_status()


class Killer:
    """SIGKILL a random pool child every 2 s and a whole worker every 10 s (restarted)."""

    def __init__(
        self, cluster: processes.Cluster, rng: random.Random, stop: threading.Event
    ) -> None:
        self.cluster, self.rng, self.stop = cluster, rng, stop
        self.child_kills = self.main_kills = 0

    def run(self) -> None:
        last_main = time.monotonic()
        while not self.stop.wait(CHILD_EVERY):
            if time.monotonic() - last_main >= MAIN_EVERY:
                last_main = time.monotonic()
                self._kill_worker()
            else:
                self._kill_child()

    def _kill_child(self) -> None:
        import os
        import signal

        worker = self.rng.choice(self.cluster.workers)
        if worker.popen is None or not worker.alive():
            return
        pool = processes.children(worker.popen.pid)
        if pool:
            try:
                os.kill(self.rng.choice(pool), signal.SIGKILL)
                self.child_kills += 1
            except ProcessLookupError:
                pass

    def _kill_worker(self) -> None:
        worker = self.rng.choice(self.cluster.workers)
        processes.kill_group(worker)
        self.main_kills += 1
        processes.start(worker, self.cluster.env)
