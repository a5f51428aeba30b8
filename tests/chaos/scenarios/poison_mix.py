"""Scenario 7: poison and failure mix. Todos are created while the handler
``chaos.poison-mix`` fails as each title asks: 2% permanently (a business rule), 5%
transiently for their first 3 runs, 0.5% by killing its worker process on every run.

1. Turn the faults on (a Redis key the handler reads); send the creates; drain.
2. Check: transients succeeded on run 4; exactly the permanent and worker-killing events
   are dead-lettered, the killers after ``LOST_LIMIT`` losses each (no redelivery loop);
   both workers' main processes still run (prefork replaced the dead pool children).
3. Turn the faults off; "retry group" every failure group through the ops API as an
   operator; drain; every dead letter resolved, each effect applied once.
"""

from __future__ import annotations

import random
import time
from typing import Any

import redis

from apps.eventstore.models import Event
from apps.resilience.models import DeadLetter, Delivery
from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.effects import (
    FAULTS_ON_KEY,
    KILL,
    KILLS_KEY,
    PERMANENT,
    POISON,
    TRANSIENT,
    TRANSIENT_FAILURES,
    attempts_key,
    fault_of,
)
from tests.chaos.load import Load
from tests.chaos.scenarios.common import Users, base_url, check_retried, retry_groups, row

NUMBER = 7
NAME = "poison-mix"
LOST_LIMIT = 2
ENV = {"RESILIENCE_WORKER_LOST_LIMIT": str(LOST_LIMIT)}
SHARES = {PERMANENT: 0.02, TRANSIENT: 0.05, KILL: 0.005}
EXPECTED_KIND = {PERMANENT: "business_rule", KILL: "system"}
PER_SECOND = 20.0
# Full size: beside neighbouring scenarios (each worker-killing event costs its worker a
# new pool child twice), with a backlog at the end that drains within the deadline.
FULL_PER_SECOND = 12.0


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import RECONCILER_THRESHOLD, REDIS_URL

    url, broker = base_url(cluster.port), redis.Redis.from_url(REDIS_URL)
    n = 200 if quick else 2000
    broker.set(FAULTS_ON_KEY, 1)
    load = Load(
        url,
        users.api,
        seed,
        PER_SECOND if quick else FULL_PER_SECOND,
        mix={"create": 1},
        recurring_share=0,
        faults=plan(n, seed),
    )
    commands = load.run(n)
    seconds, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
    injected = faults_by_event()
    findings = check_faults(injected, broker, cluster)
    broker.delete(FAULTS_ON_KEY)
    retried = retry_groups(url, users.operator)
    started = time.monotonic()
    _, left_after = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
    report = account(commands)
    report.problems += findings + check_retried(retried)
    if left_after:
        report.problems.append(f"not drained after the group retry: {left_after}")
    tally = {kind: sum(1 for f in injected.values() if f == kind) for kind in SHARES}
    summary = (
        f"injected {tally}, {int(broker.get(KILLS_KEY) or 0)} worker deaths;"
        f" {len(retried)} dead letters retried by group, drained in"
        f" {time.monotonic() - started:.1f} s"
    )
    return row(NAME, report, seconds, left, summary)


def plan(n: int, seed: int) -> list[str | None]:
    """Return one fault (or None) per create: each kind's share of ``n``, at least one,
    in a seeded random order."""
    faults: list[str | None] = []
    for kind, share in SHARES.items():
        faults += [kind] * max(1, round(n * share))
    faults += [None] * (n - len(faults))
    random.Random(seed).shuffle(faults)
    return faults


def faults_by_event() -> dict[str, str]:
    """Return the injected fault of every todo.created event that asked for one."""
    titles = Event.objects.filter(type="todo.created").values_list("event_id", "data__title")
    return {str(e): f for e, title in titles if (f := fault_of(title or "")) is not None}


def check_faults(
    injected: dict[str, str], broker: redis.Redis, cluster: processes.Cluster
) -> list[str]:
    """Return what differs from the promise after the faulty run (empty when kept)."""
    found: list[str] = []
    letters = {str(e): kind for e, kind in DeadLetter.objects.values_list("event_id", "kind")}
    expected = {e: EXPECTED_KIND[f] for e, f in injected.items() if f in EXPECTED_KIND}
    if letters != expected:
        extra = sorted(set(letters.items()) - set(expected.items()))
        missing = sorted(set(expected.items()) - set(letters.items()))
        found.append(f"dead letters != injected: extra {extra[:5]}, missing {missing[:5]}")
    if DeadLetter.objects.exclude(handler=POISON).exists():
        found.append("dead letters of handlers with no fault injected")
    transients = [e for e, f in injected.items() if f == TRANSIENT]
    wrong = [
        (e, n)
        for e in transients
        if (n := int(broker.get(attempts_key(e)) or 0)) != TRANSIENT_FAILURES + 1
    ]
    if wrong:
        found.append(f"transients not run exactly {TRANSIENT_FAILURES + 1} times: {wrong[:5]}")
    done = Delivery.objects.filter(
        handler=POISON, event_id__in=transients, status=Delivery.Status.SUCCEEDED
    ).count()
    if done != len(transients):
        found.append(f"{len(transients) - done} transients did not succeed")
    killers = sum(1 for f in injected.values() if f == KILL)
    deaths = int(broker.get(KILLS_KEY) or 0)
    if deaths != killers * LOST_LIMIT:
        found.append(f"{deaths} worker deaths, not {killers} killers x {LOST_LIMIT} losses")
    if not all(w.alive() for w in cluster.workers):
        found.append("a worker's main process died with its pool child")
    return found
