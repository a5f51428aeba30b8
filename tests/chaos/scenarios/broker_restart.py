"""Scenario 3: broker restart and loss. The processes run on a Redis of the scenario's own
(started here, on a free port, keeping its data in an append-only file fsynced on every
write), which is SIGKILLed and started again 3 times while commands flow: twice with its
data, the last time with its data deleted first (every queued and unacknowledged message
gone, and kombu's bindings with them).

Checks, besides the accounting (every acknowledged command applied, every delivery at an
end, each effect once — what the flushed broker dropped, the ledger re-sends):

- every worker consumed again within ``RESUME_WITHIN`` seconds of each restart, detected by
  consumption (a task that succeeded, in its log) and not by its process being alive;
- no request answered 5xx: the broker is not the API's business (the command commits and
  the sweep publishes what the on-commit relay could not).

QUICK: restarts at 4, 12 and 20 s of 30 s of commands at 10 a second (300); full: at 40,
120 and 200 s of 300 s (3,000).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.load import Command, Load
from tests.chaos.scenarios.common import Users, base_url, row, set_email
from tests.support.broker import PrivateRedis, free_port

NUMBER = 3
NAME = "broker-restart"
ENV: dict[str, str] = {}
PROCESSES = False  # started here, on the scenario's own Redis
PER_SECOND = 10.0
RESUME_WITHIN = 30.0
DOWN_SECONDS = 1.0
_SUCCEEDED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .* succeeded in ", re.MULTILINE)


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import RECONCILER_THRESHOLD

    scale = 1 if quick else 10
    data = Path(tempfile.mkdtemp(prefix="chaos-broker-"))
    broker = PrivateRedis(free_port(), data_dir=data)
    broker.start()
    try:
        cluster.env.update(REDIS_URL=broker.url, CELERY_BROKER_URL=broker.url)
        cluster.start()
        url = base_url(cluster.port)
        set_email(url, users.api)
        restarts: list[datetime] = []
        plan = [(4.0 * scale, False), (12.0 * scale, False), (20.0 * scale, True)]
        restarter = threading.Thread(
            target=_restart, args=(broker, data, plan, restarts), name="restarter"
        )
        restarter.start()
        try:
            commands = Load(url, users.api, seed, PER_SECOND).run(int(30 * scale * PER_SECOND))
        finally:
            restarter.join()
        commands += _until_consumed(url, users.api, cluster, restarts)
        seconds, left = drain(broker.url, RECONCILER_THRESHOLD + 120)
        report = account(commands)
        report.problems += _resumed(cluster, restarts)
        errors = [c.id for c in commands if c.status is not None and c.status >= 500]
        if errors:
            report.problems.append(f"{len(errors)} requests answered 5xx: {errors[:5]}")
        summary = f"{len(restarts)} broker restarts (the last with its data deleted)"
        return row(NAME, report, seconds, left, summary)
    finally:
        cluster.stop()
        broker.stop()
        shutil.rmtree(data, ignore_errors=True)


def _restart(
    broker: PrivateRedis, data: Path, plan: list[tuple[float, bool]], done: list[datetime]
) -> None:
    """At each planned second, SIGKILL the broker and start it again (empty, if asked)."""
    started = time.monotonic()
    for at, flush in plan:
        time.sleep(max(0.0, started + at - time.monotonic()))
        broker.stop()
        if flush:
            for path in data.iterdir():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        time.sleep(DOWN_SECONDS)  # down for a moment: requests and workers meet the outage
        broker.start()
        done.append(datetime.now())  # naive local time, as the workers' log lines


def _consumed_after(worker: processes.Proc, moment: datetime) -> datetime | None:
    """Return when ``worker`` first logged a succeeded task after ``moment``, if it did."""
    for stamp in _SUCCEEDED.findall(worker.log.read_text(errors="replace")):
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
        if at > moment:
            return at
    return None


def _until_consumed(
    url: str, token: str, cluster: processes.Cluster, restarts: list[datetime]
) -> list[Command]:
    """Keep creating todos (work for every worker) until each worker consumed after the last
    restart, or RESUME_WITHIN seconds passed since it; return the commands sent."""
    if not restarts:
        return []
    load = Load(url, token, seed=0, per_second=PER_SECOND, mix={"create": 1}, recurring_share=0)
    sent: list[Command] = []
    deadline = restarts[-1].timestamp() + RESUME_WITHIN
    while time.time() < deadline:
        if all(_consumed_after(w, restarts[-1]) for w in cluster.workers):
            break
        with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}) as client:
            command = load._next()
            load._send(client, command)
            sent.append(command)
    return sent


def _resumed(cluster: processes.Cluster, restarts: list[datetime]) -> list[str]:
    """Every worker consumed within RESUME_WITHIN seconds of every restart."""
    found: list[str] = []
    for moment in restarts:
        for worker in cluster.workers:
            at = _consumed_after(worker, moment)
            late = None if at is None else (at - moment).total_seconds()
            if late is None or late > RESUME_WITHIN:
                found.append(
                    f"{worker.name} did not consume within {RESUME_WITHIN:.0f} s of the broker"
                    f" restart at {moment:%X} (first after it: {at and f'{late:.1f} s'})"
                )
    return found
