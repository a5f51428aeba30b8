"""Scenario 13: sagas under crash. Todos are completed through the API, each completion
starting the real todo-completion saga and the chaos saga ``chaos-completion``
(``tests.chaos.handlers``: steps reserve, charge, confirm, the first two with a
compensation). A seeded plan makes a step fail for good in 30% of the chaos sagas (15%
``fault:charge``, 15% ``fault:confirm`` in the todo's title), and the worker process running
a chaos saga step (or compensation) is SIGKILLed mid-step, its effect written and its
transaction open, at most once per saga.

QUICK: 50 todos (a fifth recurring; 10 reminders an hour ahead, which the completion saga
cancels) completed with at most ``IN_FLIGHT`` chaos sagas under way, 10 kills; full: 500
todos, 50 kills. The load follows the machine's pace: about 25 s of completions on a busy
2-core machine (QUICK), 4 minutes in all (full).

1. Create the todos, schedule the reminders, then complete every todo while a killer asks
   for a step to hold (``HOLD_KEY``) every ``KILL_EVERY`` s and SIGKILLs the pool child that
   holds one (verified to be a child of a worker this run started); drain.
2. Check (``sagas_crash_checks``): every saga ended completed or compensated, as
   planned; each ended within one stuck-saga sweep interval (+ slack) of its last fault;
   each kill landed mid-step (the ledger counts a run that never finished); exactly the
   planned steps were dead-lettered; each compensation ran exactly once, in reverse order;
   the step log is complete; the accounting finds nothing lost or duplicated.
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from django.utils import timezone

from apps.sagas.models import SagaInstance
from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.handlers import HELD_KEY, HOLD_KEY, KILLED_KEY, SAGA, SAGAS_ON_KEY
from tests.chaos.load import Command, Load
from tests.chaos.scenarios.common import Users, base_url, row, set_email
from tests.chaos.scenarios.sagas_crash_checks import Kill, check

NUMBER = 13
NAME = "sagas-crash"
FULL_MINUTES = 5
ENV: dict[str, str] = {}
FAILING = {"charge": 0.15, "confirm": 0.15}
CREATE_PER_SECOND = 25.0
# Completions whose chaos saga has not ended yet, at most: the load follows the machine's
# pace, so a killed step's message, re-queued behind the others, never waits long.
IN_FLIGHT = 8
KILL_EVERY = 0.6
REMINDER_SHARE = 0.2


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import RECONCILER_THRESHOLD, REDIS_URL, TIMINGS

    url, broker = base_url(cluster.port), redis.Redis.from_url(REDIS_URL)
    n, kills = (50, 10) if quick else (500, 50)
    set_email(url, users.api)
    broker.set(SAGAS_ON_KEY, 1)
    commands, planned = _create(url, users.api, seed, n)
    killer = Killer(cluster, broker, kills)
    thread = threading.Thread(target=killer.run, name="saga-killer")
    thread.start()
    try:
        commands += _complete(url, users.api, seed, list(planned), killer)
        _wait_for_kills(killer, deadline=60.0)
    finally:
        killer.stop.set()
        thread.join()
    seconds, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
    report = account(commands)
    findings, tally = check(planned, killer.kills, float(TIMINGS["SAGA_SWEEP_SECONDS"]))
    report.problems += findings
    if len(killer.kills) < kills:
        report.problems.append(f"only {len(killer.kills)} of {kills} kills landed on a saga step")
    summary = f"{tally}; {len(killer.kills)} kills mid-step, {killer.missed} holds not killed"
    return row(NAME, report, seconds, left, summary)


def plan(n: int, seed: int) -> list[str | None]:
    """Return the failing step (or None) of each todo's chaos saga, in a seeded order."""
    faults: list[str | None] = []
    for step, share in FAILING.items():
        faults += [step] * max(1, round(n * share))
    faults += [None] * (n - len(faults))
    random.Random(seed).shuffle(faults)
    return faults


def _create(url: str, token: str, seed: int, n: int) -> tuple[list[Command], dict[str, str | None]]:
    """Create the todos (titles naming their fault) and schedule reminders on some; return
    the commands and each created todo's planned failing step."""
    load = Load(url, token, seed, CREATE_PER_SECOND, mix={"create": 1}, faults=plan(n, seed))
    commands = list(load.run(n))
    planned = {
        c.stream_id: c.fault for c in commands if c.stream_id and c.outcome == "acknowledged"
    }
    reminders = _LaterReminders(url, token, seed + 1, CREATE_PER_SECOND, mix={"reminder": 1})
    reminders.open = list(planned)
    commands += reminders.run(round(n * REMINDER_SHARE))
    return commands, planned


class _LaterReminders(Load):
    """Reminders an hour ahead: still pending when their todo is completed, so the
    completion saga's cancel-reminders step cancels them (the drain waits for that)."""

    def _body(self, command: Command) -> dict[str, Any] | None:
        body = super()._body(command)
        if body is not None:
            body["remind_at"] = (timezone.now() + timedelta(hours=1)).isoformat()
        return body


def _complete(url: str, token: str, seed: int, todos: list[str], killer: Killer) -> list[Command]:
    """Complete every todo once, in a seeded order, keeping at most ``IN_FLIGHT``
    completions whose chaos saga has not ended; let the killer's kills follow the progress
    (all of them allowed once 80% of the todos are sent)."""
    load = Load(url, token, seed + 2, 1000.0, mix={"complete": 1})
    load.open, total = list(todos), len(todos)
    deadline = time.monotonic() + 30 + 3 * total
    while load.open and time.monotonic() < deadline:
        ended = SagaInstance.objects.filter(type=SAGA).exclude(state__in=SagaInstance.ACTIVE)
        sent = sum(c.outcome == "acknowledged" for c in load.commands)
        free = IN_FLIGHT - (sent - ended.count())
        if free > 0:
            batch = min(free, len(load.open))
            load.run(batch, threads=min(4, batch))
            killer.allowed = math.ceil(killer.target * len(load.commands) / (0.8 * total))
        else:
            time.sleep(0.1)
    killer.allowed = killer.target
    return load.commands


def _wait_for_kills(killer: Killer, *, deadline: float) -> None:
    """Let the killer go on until it has its kills or no chaos saga is left running."""
    started = time.monotonic()
    while len(killer.kills) < killer.target and time.monotonic() - started < deadline:
        active = SagaInstance.objects.filter(type=SAGA, state__in=SagaInstance.ACTIVE)
        if not active.exists():
            break
        time.sleep(0.5)


@dataclass
class Killer:
    """Every ``KILL_EVERY`` s (while fewer than ``allowed``), ask for a saga step to hold and
    SIGKILL the pool child that holds it, if it is one this run started; stop after
    ``target`` kills."""

    cluster: processes.Cluster
    broker: redis.Redis
    target: int
    allowed: int = 0  # kills allowed so far (the load's progress)
    kills: list[Kill] = field(default_factory=list)
    missed: int = 0  # holds no step took, or that a step outlasted
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while len(self.kills) < self.target and not self.stop.wait(KILL_EVERY):
            if len(self.kills) >= self.allowed:
                continue
            self.broker.set(HOLD_KEY, 1)
            if not self._kill_held(time.monotonic() + 3):
                self.missed += 1
            self.broker.delete(HOLD_KEY)

    def _kill_held(self, deadline: float) -> bool:
        while time.monotonic() < deadline and not self.stop.is_set():
            for pid, what in self.broker.hgetall(HELD_KEY).items():
                if self.broker.hdel(HELD_KEY, pid):  # claimed: the step waits for its end
                    text = what.decode() if isinstance(what, bytes) else str(what)
                    return self._kill(int(pid), text)
            time.sleep(0.02)
        return False

    def _kill(self, pid: int, what: str) -> bool:
        handler, saga_id, event_id = what.split()
        pool = [p for w in self.cluster.workers if w.popen for p in processes.children(w.popen.pid)]
        if pid not in pool:  # not a process this run started: leave it alone
            return False
        self.broker.sadd(KILLED_KEY, saga_id)  # its re-run must not hold again
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.kills.append(Kill(timezone.now(), pid, handler, saga_id, event_id))
        return True
