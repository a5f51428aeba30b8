"""Scenario 14: console actions under load. A group of dead letters is retried through the
ops API while new failures of the same group keep arriving.

1. With the poison handler's faults on, create ``n`` todos whose title asks for a permanent
   failure (``fault:permanent``): ``n`` dead letters, one group (one fingerprint).
2. Heal their events (the Redis set ``chaos:healed``: the bug fixed for them), then, while
   ``m`` more creates with the same fault arrive, two operators post "retry group" for the
   fingerprint at the same moment, twice over; each time both post again while either
   answer says letters remain (a call works for ``CONSOLE_GROUP_ACTION_SECONDS``).
3. Drain and check: every letter ends resolved (healed, so its retry succeeded) or pending
   again (a new failure, retried or not yet); none is left retrying; no letter was retried
   twice by one round of the two operators (each letter in at most one of the two answers'
   ``done``, one ``retry`` audit per letter per round); every effect applied once (the
   accounting); the healed ones all resolved, the new ones none.

QUICK: 60 dead letters, then 40 new failures at 10 a second (about 20 s); full: 500 and 300.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import redis

from apps.resilience.models import DeadLetter, DeadLetterAction
from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.effects import FAULTS_ON_KEY, HEALED_KEY, PERMANENT
from tests.chaos.load import Command, Load
from tests.chaos.scenarios.common import Users, base_url, row

NUMBER = 14
NAME = "console-retry"
ENV: dict[str, str] = {}
PER_SECOND = 10.0
ROUNDS = 2
CALLS = 20  # at most, per operator and round


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import RECONCILER_THRESHOLD, REDIS_URL

    url, broker = base_url(cluster.port), redis.Redis.from_url(REDIS_URL)
    n, m = (60, 40) if quick else (500, 300)
    broker.set(FAULTS_ON_KEY, 1)
    commands = _creates(url, users.api, seed, n, per_second=4 * PER_SECOND)
    _, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
    problems = [f"not drained before the retry: {left}"] if left else []
    first = {str(e) for e in DeadLetter.objects.values_list("event_id", flat=True)}
    fingerprints = set(DeadLetter.objects.values_list("fingerprint", flat=True))
    if len(first) != n or len(fingerprints) != 1:
        problems.append(f"{len(first)} dead letters in {len(fingerprints)} groups, not {n} in 1")
    broker.sadd(HEALED_KEY, *first)
    [fingerprint] = fingerprints or {""}
    arriving: list[Command] = []
    later = threading.Thread(
        target=lambda: arriving.extend(_creates(url, users.api, seed + 1, m, PER_SECOND)),
        name="new-failures",
    )
    later.start()
    rounds: list[list[dict[str, Any]]] = []
    for _ in range(ROUNDS):
        time.sleep(m / PER_SECOND / (ROUNDS + 1))  # paced: new failures arrive meanwhile
        # A call works for a bounded time and says what it left: both call again until none.
        for _call in range(CALLS):
            rounds.append(_retry_twice_at_once(url, users.operator, fingerprint))
            if not any(answer["remaining"] for answer in rounds[-1]):
                break
        else:
            problems.append(f"letters still remained after {CALLS} calls of each operator")
    later.join()
    seconds, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
    report = account(commands + arriving)
    report.problems += problems + _check(first, rounds)
    retried = sum(len(a["done"]) for r in rounds for a in r)
    summary = f"{len(first)} letters healed, {retried} retries done in {ROUNDS} double rounds"
    return row(NAME, report, seconds, left, summary)


def _creates(url: str, token: str, seed: int, n: int, per_second: float) -> list[Command]:
    faults: list[str | None] = [PERMANENT] * n
    load = Load(url, token, seed, per_second, mix={"create": 1}, recurring_share=0, faults=faults)
    return load.run(n)


def _retry_twice_at_once(url: str, token: str, fingerprint: str) -> list[dict[str, Any]]:
    """Two operators post "retry group" together; return both answers."""
    start = threading.Barrier(2, timeout=30)

    def retry(_: int) -> dict[str, Any]:
        headers = {"Authorization": f"Token {token}"}
        with httpx.Client(base_url=f"{url}/api/v1/ops/", headers=headers, timeout=60) as client:
            start.wait()
            answer = client.post(f"dead-letter-groups/{fingerprint}/retry/", json={})
            if answer.status_code == 404:  # the other operator's calls left no open letter
                return {"done": [], "skipped": [], "remaining": 0}
            answer.raise_for_status()
            found: dict[str, Any] = answer.json()
            return found

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(retry, range(2)))


def _check(first: set[str], rounds: list[list[dict[str, Any]]]) -> list[str]:
    found: list[str] = []
    for number, answers in enumerate(rounds, start=1):
        twice = set(answers[0]["done"]) & set(answers[1]["done"])
        if twice:
            found.append(f"round {number}: letters retried by both operators: {sorted(twice)[:5]}")
    done = Counter(pk for answers in rounds for a in answers for pk in a["done"])
    audits = Counter(
        DeadLetterAction.objects.filter(action=DeadLetterAction.Action.RETRY).values_list(
            "dead_letter_id", flat=True
        )
    )
    if audits != done:
        found.append(f"retry audits {sum(audits.values())} != retries answered done {done.total()}")
    letters = list(DeadLetter.objects.values_list("pk", "event_id", "status"))
    stuck = [pk for pk, _, status in letters if status == DeadLetter.Status.RETRYING]
    if stuck:
        found.append(f"{len(stuck)} letters left retrying: {stuck[:5]}")
    healed = [
        (pk, s) for pk, e, s in letters if str(e) in first and s != DeadLetter.Status.RESOLVED
    ]
    if healed:
        found.append(f"{len(healed)} healed letters not resolved: {healed[:5]}")
    new = [
        (pk, s) for pk, e, s in letters if str(e) not in first and s != DeadLetter.Status.PENDING
    ]
    if new:
        found.append(f"{len(new)} letters of new failures not pending again: {new[:5]}")
    if not any(str(e) not in first for _, e, _ in letters):
        found.append("no new failure arrived during the retries: the load proved nothing")
    return found
