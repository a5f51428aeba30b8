"""Scenario 1: worker kills. Commands flow while a random worker child is SIGKILLed every
2 s and a whole worker (main process and pool) every 10 s, then restarted.

A delivery whose runs died with their worker ``RESILIENCE_WORKER_LOST_LIMIT`` times (3) is
dead-lettered as ``WorkerLostRepeatedly``: the crash-loop guard cannot tell a slow handler
that three kills hit from one that kills its worker. That may happen here (a fifth of the
handlers take up to a second); any other dead letter is a finding. Once drained, the
operator retries each such group through the ops API, as from the console, with the
kills over, and every letter must end resolved before the count is taken.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.load import Load
from tests.chaos.scenarios.common import (
    Users,
    base_url,
    check_retried,
    retry_groups,
    row,
    set_email,
)

CHILD_EVERY, MAIN_EVERY = 2.0, 10.0
# 300 commands take 20 s (QUICK): about 8 child kills and 2 worker kills land while they flow.
PER_SECOND = 15.0
# Full size: by itself, 5,000 commands in about 4 minutes. Its workers run two pool
# processes each, as the Procfile's do (the other scenarios run one): a handler sleeping up
# to a second, or a worker restarting after a kill, no longer stalls a whole worker. By
# itself at 20 a second it drained in 18 s (deadline 142) with a third of the machine idle;
# with one pool process each, 12 a second drained in 16-93 s, and beside neighbours 15 a
# second did not drain at all.
ALONE = "full"
FULL_PER_SECOND = 20.0
WORKER_CONCURRENCY = 2


NUMBER = 1
NAME = "worker-kills"
ENV: dict[str, str] = {}
RABBITMQ = True  # run on RabbitMQ too


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import BROKER_URL, RECONCILER_THRESHOLD

    url = base_url(cluster.port)
    set_email(url, users.api)
    n = 300 if quick else 5000
    stop = threading.Event()
    killer = Killer(cluster, random.Random(seed), stop)
    thread = threading.Thread(target=killer.run, name="killer")
    thread.start()
    try:
        per_second = PER_SECOND if quick else FULL_PER_SECOND
        commands = Load(url, users.api, seed, per_second, quick=quick).run(n)
    finally:
        stop.set()
        thread.join()
    seconds, left = drain(BROKER_URL, RECONCILER_THRESHOLD + 120)
    problems, retried, again = crash_loops(), [], 0.0
    if not left:  # the operator retries them, as from the console, the kills over
        retried = retry_groups(url, users.operator)
        again, left = drain(BROKER_URL, RECONCILER_THRESHOLD + 120)
        problems += check_retried(retried)
    report = account(commands)
    report.problems += problems
    summary = (
        f"{killer.child_kills} child kills, {killer.main_kills} worker kills;"
        f" {len(retried)} dead letters retried by group, drained in {again} s"
    )
    return row(NAME, report, seconds, left, summary)


def crash_loops() -> list[str]:
    """Name the dead letters that are not the crash-loop guard's (each is a finding)."""
    from apps.resilience.models import DeadLetter
    from apps.resilience.taxonomy import WorkerLostRepeatedly

    guard = f"{WorkerLostRepeatedly.__module__}.{WorkerLostRepeatedly.__qualname__}"
    others = DeadLetter.objects.exclude(exception_type=guard)
    count = others.count()
    return [
        f"{count} dead letters not the crash-loop guard's, e.g. {exc} ({kind}): {handler} {event}"
        for exc, kind, handler, event in others.values_list(
            "exception_type", "kind", "handler", "event_id"
        )[:5]
    ]


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
