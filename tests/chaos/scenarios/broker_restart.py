"""Scenario 3: broker restart and loss. The processes run on a Redis of the scenario's own
(started here, on a free port, keeping its data in an append-only file fsynced on every
write), which is SIGKILLed and started again 3 times while commands flow: twice with its
data, the last time with its data deleted first (every queued and unacknowledged message
gone, and kombu's bindings with them).

On RabbitMQ (``RABBITMQ = True``: the harness gives it an ``amqp://`` broker) the same plan
runs on a RabbitMQ node of the scenario's own (``tests.chaos.own_rabbitmq``: free ports, its
data in a temporary directory; the machine's RabbitMQ is never restarted): its process group
SIGKILLed and started again, twice with its data (durable queues, persistent messages —
those the publisher confirms covered must survive), the last time with its data directory
deleted (every queue, message and binding gone). The cache stays on the harness's Redis.

Checks, besides the accounting (every acknowledged command applied, every delivery at an
end, each effect once — what the flushed broker dropped, the ledger re-sends):

- all 3 restarts happened;
- every worker consumed again within ``RESUME_WITHIN`` seconds of each restart, detected by
  consumption (a task that succeeded, in its log) and not by its process being alive;
- no request answered 5xx: the broker is not the API's business (the command commits and
  the sweep publishes what the on-commit relay could not);
- on RabbitMQ, before each restart that keeps the data: Backstop's queues exist and are
  durable (``rabbitmqctl list_queues``), and a persistent message published with confirms
  to a probe queue of the scenario's own before the kill is there after the start (none
  after the wipe).

QUICK: restarts at 4, 12 and 20 s of 30 s of commands at 5 a second (150); full: at 20,
60 and 100 s of 150 s at 10 a second (1,500); each waits, besides, until every worker
consumed after the one before or ``RESUME_WITHIN`` passed. Down 1 s on Redis; on RabbitMQ
1 s plus the node's boot (some 5 s here, 20 s or more beside other scenarios), and the workers' next
reconnection try on top (``BROKER_RECONNECT_MAX_SECONDS`` apart at most, 3 s by default).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from kombu import Connection, Queue

from tests.chaos import processes, rabbitmq
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.load import Command, Load
from tests.chaos.own_rabbitmq import OwnRabbitMQ
from tests.chaos.scenarios.common import Users, base_url, row, set_email
from tests.support.broker import PrivateRedis, free_port

NUMBER = 3
NAME = "broker-restart"
ENV: dict[str, str] = {}
PROCESSES = False  # started here, on the scenario's own Redis or RabbitMQ node
RABBITMQ = True
# QUICK: 30 s at 5 a second; full: 150 s at 10 a second, restarts 40 s apart (a RabbitMQ
# node's boot beside other scenarios takes 20 s or more).
PER_SECOND, FULL_PER_SECOND = 5.0, 10.0
RESUME_WITHIN = 30.0
DOWN_SECONDS = 1.0
PROBE = "chaos.probe"  # a durable queue of the scenario's own, on RabbitMQ
_SUCCEEDED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .* succeeded in ", re.MULTILINE)


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import BROKER_URL, RECONCILER_THRESHOLD

    scale, per_second = (1, PER_SECOND) if quick else (5, FULL_PER_SECOND)
    with _own_broker(cluster, amqp=BROKER_URL.startswith("amqp")) as broker:
        cluster.start()
        url = base_url(cluster.port)
        set_email(url, users.api)
        restarts: list[datetime] = []
        plan = [(4.0 * scale, False), (12.0 * scale, False), (20.0 * scale, True)]
        restarter = threading.Thread(
            target=_restart, args=(broker, plan, restarts, cluster.workers), name="restarter"
        )
        restarter.start()
        try:
            commands = Load(url, users.api, seed, per_second, quick=quick).run(
                int(30 * scale * per_second)
            )
        finally:
            restarter.join()
        commands += _until_consumed(url, users.api, cluster, restarts)
        seconds, left = drain(broker.url, RECONCILER_THRESHOLD + 120)
        report = account(commands)
        report.problems += broker.problems
        if len(restarts) < len(plan):  # the restarter died: its traceback is in the output
            report.problems.append(f"only {len(restarts)} of {len(plan)} broker restarts done")
        report.problems += _resumed(cluster, restarts)
        errors = [c.id for c in commands if c.status is not None and c.status >= 500]
        if errors:
            report.problems.append(f"{len(errors)} requests answered 5xx: {errors[:5]}")
        summary = f"{len(restarts)} broker restarts (the last with its data deleted)"
        return row(NAME, report, seconds, left, summary)


class _Broker(Protocol):
    """The scenario's own broker, as the restarter drives it."""

    problems: list[str]

    @property
    def url(self) -> str: ...

    def start(self) -> None: ...

    def crash(self) -> None:
        """SIGKILL it (before, on RabbitMQ: check its queues and leave a probe message)."""

    def wipe(self) -> None:
        """Delete its data (it is down)."""

    def started(self, *, wiped: bool) -> None:
        """Check what survived the restart just done."""


@contextlib.contextmanager
def _own_broker(cluster: processes.Cluster, *, amqp: bool) -> Iterator[_Broker]:
    """Start the scenario's own broker, point the cluster at it; always stop the cluster,
    then the broker, and remove its files."""
    broker: _Redis | _Rabbit
    if amqp:
        broker = _Rabbit(OwnRabbitMQ(cluster.log_dir / f"{cluster.prefix}rabbitmq.log"))
        cluster.env.update(CELERY_BROKER_URL=broker.url)  # the cache: the harness's Redis
    else:
        data = Path(tempfile.mkdtemp(prefix="chaos-broker-"))
        broker = _Redis(PrivateRedis(free_port(), data_dir=data), data)
        cluster.env.update(REDIS_URL=broker.url, CELERY_BROKER_URL=broker.url)
    try:
        broker.start()
        yield broker
    finally:
        cluster.kill()
        broker.close()


@dataclass
class _Redis:
    """A redis-server keeping its data in an append-only file fsynced on every write."""

    server: PrivateRedis
    data: Path
    problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def crash(self) -> None:
        self.server.stop()

    def wipe(self) -> None:
        for path in self.data.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def started(self, *, wiped: bool) -> None:
        pass

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.data, ignore_errors=True)


@dataclass
class _Rabbit:
    """A RabbitMQ node of the scenario's own, checked for what a crash must not lose."""

    node: OwnRabbitMQ
    problems: list[str] = field(default_factory=list)
    probes: int = 0  # persistent probe messages published (and confirmed) since the last wipe

    @property
    def url(self) -> str:
        return self.node.url

    def start(self) -> None:
        """Start the node and declare the probe queue: declared only just before the kill,
        its definition could be lost with it (seen here: declared some 15 ms before a
        SIGKILL, gone after the start). What is checked is the messages confirmed into a
        durable queue that exists."""
        self.node.start()
        with Connection(self.url) as conn:
            Queue(PROBE, durable=True)(conn.default_channel).declare()

    def crash(self) -> None:
        durable = self.node.queues()
        for queue in processes.QUEUES.split(","):
            if not durable.get(queue):
                self.problems.append(
                    f"before a restart, Backstop's queue {queue!r} was"
                    f" {'not durable' if queue in durable else 'missing'} (queues: {durable})"
                )
        with Connection(self.url, transport_options={"confirm_publish": True}) as conn:
            conn.Producer().publish(
                {"probe": self.probes + 1},
                routing_key=PROBE,
                declare=[Queue(PROBE, durable=True)],
                delivery_mode=2,
            )
        self.probes += 1
        self.node.kill()

    def wipe(self) -> None:
        self.node.wipe()
        self.probes = 0

    def started(self, *, wiped: bool) -> None:
        held = rabbitmq.waiting(self.url, [PROBE])  # a queue not there holds none
        expected = 0 if wiped else self.probes
        if held != expected:
            self.problems.append(
                f"after restart {self.node.starts - 1} ({'data deleted' if wiped else 'data kept'})"
                f" the probe queue held {held} persistent confirmed messages, not {expected}"
            )

    def close(self) -> None:
        self.node.close()


def _restart(
    broker: _Broker,
    plan: list[tuple[float, bool]],
    done: list[datetime],
    workers: list[processes.Proc],
) -> None:
    """At each planned second, SIGKILL the broker and start it again (empty, if asked); not
    before every worker consumed after the previous start or ``RESUME_WITHIN`` passed (a
    slow boot must not cut short the time the workers have to resume)."""
    started = time.monotonic()
    for at, flush in plan:
        if done:
            _await_resumed(workers, done[-1])
        time.sleep(max(0.0, started + at - time.monotonic()))
        broker.crash()
        if flush:
            broker.wipe()
        time.sleep(DOWN_SECONDS)  # down for a moment: requests and workers meet the outage
        broker.start()
        done.append(datetime.now())  # naive local time, as the workers' log lines
        broker.started(wiped=flush)


def _await_resumed(workers: list[processes.Proc], moment: datetime) -> None:
    """Return once every worker logged a succeeded task after ``moment``, or after
    ``RESUME_WITHIN`` seconds (the check after the run names a worker that did not)."""
    deadline = time.monotonic() + RESUME_WITHIN
    while time.monotonic() < deadline:
        if all(_consumed_after(worker, moment) for worker in workers):
            return
        time.sleep(0.5)


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
