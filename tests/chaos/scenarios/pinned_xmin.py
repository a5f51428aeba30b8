"""Scenario 12: pinned xmin. A transaction left idle while commands flow holds back the
oldest snapshot (xmin) every vacuum must respect: dead rows (ledger and outbox updates,
read-model updates) pile up. Throughput must stay at 65% of the baseline or more, 0 lost.

QUICK: a 6 s baseline (the pin holds as many commands and their drain, about 10-12 s);
full: a 75 s baseline (the pin about 2 minutes or more). Runs alone (``ALONE``).

1. Warm up (a few commands, drained), then the baseline: commands sent unpaced over 4
   connections (creates, updates, completions; no reminders, whose due times would set
   the pace) for the baseline's time, then drain.
2. Pin: open a connection to the scenario's database, ``BEGIN ISOLATION LEVEL REPEATABLE
   READ``, draw a transaction id and read, and leave it idle in transaction. Send as many
   commands as the baseline did, the same way; drain (still pinned); read
   ``pg_stat_activity``: the pin must still be idle in its transaction, its xmin behind;
   then end it.
3. Per phase: commands acknowledged per second of load; deliveries (the phase's handler,
   event pairs, succeeded) per second from its start to its last delivery's end; and
   commands per CPU-second of the processes under test (``Meter``). Under the pin each
   must be at least ``MIN_RATIO`` of the baseline's (see ``compare``: a per-second
   shortfall is put down to the neighbours only when other processes took clearly more of
   the machine while the work per CPU-second held). Then all commands of both phases are
   counted (``account``): 0 lost, 0 duplicated.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from django.db import connection
from django.db.models import Max, Sum
from django.utils import timezone

from apps.resilience.models import Delivery
from tests.chaos import processes
from tests.chaos.accounting import Report, account
from tests.chaos.drain import drain
from tests.chaos.load import Load
from tests.chaos.scenarios.common import Users, base_url, row

NUMBER = 12
NAME = "pinned-xmin"
# The unpaced load queues deliveries faster than the workers run them, on purpose (a full
# run about a minute's worth). The reconciler re-sends a queued pair that has not started
# within LEDGER_QUEUED_SECONDS (the harness's 10 s; 60 s in production): its copies would
# double the backlog they wait behind, and the rates would measure them, not the pin.
ENV = {"LEDGER_QUEUED_SECONDS": "300"}
# It measures throughput: run it alone, after the rest, so no neighbour's load skews it.
ALONE = True

MIN_RATIO = 0.65
MIX = {"create": 25, "update": 55, "complete": 20}
UNPACED = 1_000_000.0  # commands a second: Load never waits between commands
CHUNK = 20  # commands per Load.run: the load stops within a chunk of its time
WARM_UP = 8
# A shortfall per second is put down to other processes when, under the pin, they took at
# least this much more of the machine's CPU than during the baseline (and not to the pin:
# the work per CPU-second held).
NEIGHBOURS_MARGIN = 0.10


@dataclass
class Phase:
    """What one phase measured; its CPU, from its start until drained."""

    name: str
    sent: int
    acknowledged: int
    load_seconds: float
    deliveries: int
    pipeline_seconds: float  # from the phase's start to the end of its last delivery
    drain_seconds: float
    left: dict[str, int]
    cpu: Cpu
    resent: int  # messages the reconciler re-sent for the phase's deliveries

    def __str__(self) -> str:
        return (
            f"{self.name} {self.acknowledged} commands in {self.load_seconds:.1f} s"
            f" ({self.command_rate:.1f}/s), {self.deliveries} deliveries in"
            f" {self.pipeline_seconds:.1f} s ({self.delivery_rate:.1f}/s, {self.resent} re-sent),"
            f" {self.per_cpu_second:.1f} commands per CPU-second,"
            f" others took {self.cpu.others_share:.0%} of the machine"
        )

    @property
    def command_rate(self) -> float:
        return self.acknowledged / self.load_seconds

    @property
    def delivery_rate(self) -> float:
        return self.deliveries / self.pipeline_seconds if self.pipeline_seconds > 0 else 0.0

    @property
    def per_cpu_second(self) -> float:
        """Commands per CPU-second of the processes under test: what the pin's dead rows
        cost, whoever else shares the machine."""
        return self.acknowledged / self.cpu.ours if self.cpu.ours > 0 else 0.0


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    load = Load(base_url(cluster.port), users.api, seed, UNPACED, mix=MIX, recurring_share=0)
    load.run(WARM_UP)
    settle()
    seconds = 6 if quick else 75
    meter = Meter(cluster)
    baseline = phase(load, "baseline", meter, seconds=seconds)
    with Pin(cluster.env["DATABASE_URL"]) as pin:
        # The same work again (as many commands), so both phases queue as much behind them.
        pinned = phase(load, "pinned", meter, count=baseline.sent)
        held = pin.evidence()
        dead = dead_rows()
    report = account(load.commands)
    report.problems += pin.problems(held)
    notes = compare(report, baseline, pinned)
    left = {**baseline.left, **pinned.left}
    summary = (
        f"{baseline}; {pinned} (pin held {held.get('seconds', 0):.0f} s, xmin age"
        f" {held.get('xmin_age')} transactions; most dead rows: {dead}){notes}"
    )
    return row(NAME, report, pinned.drain_seconds, left, summary)


def phase(load: Load, name: str, meter: Meter, *, seconds: float = 0.0, count: int = 0) -> Phase:
    """Send commands unpaced, ``CHUNK`` at a time, for ``seconds`` or until ``count`` are
    sent; drain; return what the phase measured."""
    before = len(load.commands)
    started_at, first = timezone.now(), meter.sample()
    started = time.monotonic()
    while time.monotonic() - started < seconds or len(load.commands) - before < count:
        load.run(CHUNK)
    load_seconds = time.monotonic() - started
    drain_seconds, left = settle(3 * load_seconds)
    cpu = meter.since(first)
    ours = Delivery.objects.filter(created_at__gte=started_at)
    last: datetime | None = ours.aggregate(last=Max("updated_at"))["last"]
    acknowledged = sum(1 for c in load.commands[before:] if c.outcome == "acknowledged")
    return Phase(
        name,
        len(load.commands) - before,
        acknowledged,
        load_seconds,
        deliveries=ours.filter(status=Delivery.Status.SUCCEEDED).count(),
        pipeline_seconds=(last - started_at).total_seconds() if last else 0.0,
        drain_seconds=drain_seconds,
        left={f"{name}_{k}": v for k, v in left.items()},
        cpu=cpu,
        resent=ours.aggregate(n=Sum("resends"))["n"] or 0,
    )


def settle(backlog: float = 0.0) -> tuple[float, dict[str, int]]:
    """Drain (see ``drain``), allowing ``backlog`` seconds more than the other scenarios;
    return the seconds it took and what was left."""
    from tests.chaos.harness import RECONCILER_THRESHOLD, REDIS_URL

    return drain(REDIS_URL, RECONCILER_THRESHOLD + 120 + backlog)


def compare(report: Report, baseline: Phase, pinned: Phase) -> str:
    """Flag a rate under the pin below ``MIN_RATIO`` of the baseline's; return a note for
    the summary when a shortfall is put down to the neighbours.

    1. Per CPU-second of the processes under test (the pin's cost in work): always.
    2. Per second (the promise as worded): unless, under the pin, other processes took at
       least ``NEIGHBOURS_MARGIN`` more of the machine than during the baseline while 1.
       held: then it was the neighbours, not the pin, that slowed the run down.
    """
    crowded = pinned.cpu.others_share - baseline.cpu.others_share >= NEIGHBOURS_MARGIN
    checks = [
        ("commands per CPU-second", baseline.per_cpu_second, pinned.per_cpu_second, False),
        ("commands acknowledged/s", baseline.command_rate, pinned.command_rate, crowded),
        ("deliveries/s", baseline.delivery_rate, pinned.delivery_rate, crowded),
    ]
    excused: list[str] = []
    for what, base, during, neighbours in checks:
        if base <= 0:
            report.problems.append(f"no baseline {what}: nothing was measured")
        elif during < MIN_RATIO * base:
            shortfall = f"{what} under the pin {during:.1f}, {during / base:.0%} of the baseline"
            if neighbours and pinned.per_cpu_second >= MIN_RATIO * baseline.per_cpu_second:
                excused.append(shortfall)
            else:
                report.problems.append(f"{shortfall} {base:.1f} (at least {MIN_RATIO:.0%})")
    return f"; put down to the neighbours: {', '.join(excused)}" if excused else ""


@dataclass(frozen=True)
class Cpu:
    """CPU-seconds of a phase: the processes under test's and the whole machine's."""

    ours: float
    machine_busy: float
    machine_total: float

    @property
    def others_share(self) -> float:
        """The share of the machine's CPU time that other processes used."""
        return max(0.0, self.machine_busy - self.ours) / self.machine_total


@dataclass(frozen=True)
class Sample:
    per_process: dict[int, float]  # pid -> CPU-seconds so far
    machine_busy: float
    machine_total: float


class Meter:
    """CPU time of the processes under test: this process (the load), the cluster's
    processes and their children, and the database's backends serving the scenario's
    database (from ``pg_stat_activity``); and of the whole machine (``/proc/stat``)."""

    TICKS = os.sysconf("SC_CLK_TCK")

    def __init__(self, cluster: processes.Cluster) -> None:
        self.cluster = cluster

    def sample(self) -> Sample:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            pids = {pid for (pid,) in cursor.fetchall()} | {os.getpid()}
        for proc in [self.cluster.web, *self.cluster.workers, self.cluster.beat]:
            if proc.popen is not None:
                pids |= {proc.popen.pid, *processes.children(proc.popen.pid)}
        used = {pid: cpu for pid in pids if (cpu := self._process(pid)) is not None}
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        idle = fields[3] + fields[4]  # idle, iowait
        return Sample(used, (sum(fields) - idle) / self.TICKS, sum(fields) / self.TICKS)

    def since(self, first: Sample) -> Cpu:
        """Return the CPU used since ``first``: a process started since counts in full, one
        that ended since is lost (none ends in this scenario but by a stop)."""
        last = self.sample()
        ours = sum(cpu - first.per_process.get(pid, 0.0) for pid, cpu in last.per_process.items())
        return Cpu(
            ours,
            last.machine_busy - first.machine_busy,
            last.machine_total - first.machine_total,
        )

    def _process(self, pid: int) -> float | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / self.TICKS  # utime + stime


class Pin:
    """A transaction that holds a snapshot, and so the database's xmin, until it ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.started = 0.0

    def __enter__(self) -> Pin:
        self.conn = psycopg.connect(self.url)  # not autocommit: the first query BEGINs
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        row = self.conn.execute(
            "SELECT pg_backend_pid(), pg_current_xact_id()::text,"
            " (SELECT count(*) FROM eventstore_event)"
        ).fetchone()
        assert row is not None
        self.pid, self.xid = row[0], row[1]
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.rollback()
        self.conn.close()

    def evidence(self) -> dict[str, Any]:
        """Return what ``pg_stat_activity`` says of the pin's session now."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT state, backend_xid::text, age(backend_xmin) FROM pg_stat_activity"
                " WHERE pid = %s",
                [self.pid],
            )
            found = cursor.fetchone()
        seconds = time.monotonic() - self.started
        if found is None:
            return {"seconds": seconds, "state": "gone"}
        return {"seconds": seconds, "state": found[0], "xid": found[1], "xmin_age": found[2]}

    def problems(self, held: dict[str, Any]) -> list[str]:
        """Findings if the pin did not hold: its session gone, not idle in its transaction,
        or its xmin never fell behind (no transaction ran while it was held)."""
        if held.get("state") != "idle in transaction" or held.get("xid") != self.xid:
            return [f"the pin did not hold its transaction {self.xid}: {held}"]
        if not held.get("xmin_age"):
            return [f"the pin's xmin never fell behind: {held}"]
        return []


def dead_rows() -> str:
    """Return the tables with the most dead rows (as the statistics collector last saw)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_dead_tup FROM pg_stat_user_tables ORDER BY n_dead_tup DESC LIMIT 3"
        )
        return ", ".join(f"{name} {n}" for name, n in cursor.fetchall())
