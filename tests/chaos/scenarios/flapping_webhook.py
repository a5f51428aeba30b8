"""Scenario 5: a flapping dependency. The chaos user's webhook points at the local sink
(``tests.chaos.sink``), which goes down and up in turn while reminders with the webhook
channel fall due, one every few tenths of a second: down (503 in odd down periods, the
connection closed unanswered in even ones) for a period, up for a period, and so on, then up
for the drain. QUICK: 40 reminders, 4 periods of 4 s; full: 400 reminders, 9 periods of
20 s (3 minutes). The breaker settings are small (``ENV``): it opens after 3 failures, half
opens after 1.5 s, admits 1 probe at a time and closes after 2 successes.

Checks, against the breaker's own record (its generations in Redis: when each opened, and
when it was left, from the expiry of its exit key; one ``BreakerTransition`` per exit) and
the sink's log of every call:

- each down period opens the breaker, after at most ``THRESHOLD`` failed calls (plus one
  call per other worker already under way);
- in every open generation, the calls that reached the sink while it was open are at most
  the calls already under way when it opened (one per other worker when it opened from
  closed, a concurrent probe's when it re-opened), and all its calls, open or half-open, at
  most those plus the probes one half-open generation admits across all workers
  (``SUCCESSES - 1 + MAX_PROBES``);
- every reminder fired and its webhook notification was accepted by the sink (2xx) exactly
  once by idempotency key (``Idempotency-Key``, the notification's id), and is ``sent``;
  a key accepted twice is duplicated, a missing one lost;
- the accounting finds 0 lost and 0 duplicated.

A failed probe is a real attempt (transient, 5 attempts), and the deferred notification
that comes back first after a re-opening tends to be the next probe too: one that fails
as the probe 5 times in a long down period is dead-lettered, as the design says of
exhausted transient failures, and retried automatically (after an hour by default; here
after 3 s, ``ENV``). Such dead letters must be transient, of ``notifications.deliver``, and
resolved (retried and delivered) by the end.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import redis
from django.core.cache import cache

from apps.eventstore.models import Event
from apps.notifications.aggregates import notification_id
from apps.notifications.models import NotificationState
from apps.resilience.breakers import _DAY as EXIT_KEY_SECONDS
from apps.resilience.breakers import CircuitBreaker
from apps.resilience.models import BreakerTransition, DeadLetter
from tests.chaos import processes
from tests.chaos.accounting import Report, account
from tests.chaos.drain import drain
from tests.chaos.load import CREATE_ATTEMPTS, Command, send
from tests.chaos.scenarios.common import Users, base_url, row
from tests.chaos.sink import Call, Mode, Sink

NUMBER = 5
NAME = "flapping-webhook"
THRESHOLD, RESET, MAX_PROBES, SUCCESSES = 3, 1.5, 1, 2
ENV = {
    "BREAKER_FAILURE_THRESHOLD": str(THRESHOLD),
    "BREAKER_WINDOW_SECONDS": "10",
    "BREAKER_RESET_TIMEOUT": str(RESET),
    "BREAKER_HALF_OPEN_MAX_CALLS": str(MAX_PROBES),
    "BREAKER_SUCCESS_THRESHOLD": str(SUCCESSES),
    "BREAKER_PROBE_LEASE_SECONDS": "5",
    # A notification dead-lettered after failing as the probe 5 times comes back soon.
    "DEAD_LETTER_AUTO_RETRY_SECONDS": "3",
    "DEAD_LETTER_AUTO_RETRY_LIMIT": "10",
    "DEAD_LETTER_SWEEP_SECONDS": "2",
}
WORKERS = 2  # processes calling the webhook, each one call at a time (--concurrency 1)
BREAKER = "webhook:127.0.0.1"  # the breaker of the sink's host
TODOS = 5  # the reminders' todos, in turn (a todo holds at most 10 pending reminders)
LEAD = 2.0  # a reminder is due this long after it is scheduled (in the future when it arrives)
WARM_UP = LEAD + 1  # reminders start this long before the first down period
SETTLE = 60.0  # after the drain, the longest wait for every notification to be sent


@dataclass(frozen=True)
class Size:
    reminders: int
    periods: int  # down, up, down, ... each ``period`` long; then up for the drain
    period: float


QUICK, FULL = Size(40, 4, 4.0), Size(400, 9, 20.0)


@dataclass(frozen=True)
class Period:
    start: float
    end: float
    mode: Mode


@dataclass(frozen=True)
class Generation:
    """One generation of the breaker: closed from ``start``, or open from ``opened``
    (half-open ``RESET`` later), until its exit (``end``; infinite while current)."""

    number: int
    start: float
    end: float
    opened: float | None


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import RECONCILER_THRESHOLD, REDIS_URL, RESULTS, TIMINGS

    size = QUICK if quick else FULL
    began = time.monotonic()
    url = base_url(cluster.port)
    with Sink(RESULTS / f"{NAME}-sink.log") as sink:
        set_webhook(url, users.api, sink.url)
        sender = Sender(url, users.api)
        todos = sender.create_todos(TODOS)
        downs: list[Period] = []
        flapper = threading.Thread(target=flap, args=(sink, size, downs), name="flapper")
        flapper.start()
        try:
            # The last reminder fires (a sweep after it is due) before the last period ends.
            sweep = float(TIMINGS["REMINDER_SWEEP_SECONDS"])
            span = WARM_UP + size.periods * size.period - LEAD - sweep
            sender.schedule(todos, size.reminders, span)
        finally:
            sender.client.close()
            flapper.join()
        sink.up()
        started = time.monotonic()
        _, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
        if not left and settle(SETTLE):  # dead letters were retried: drain what followed
            _, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
        seconds = round(time.monotonic() - started, 1)
        calls = sink.calls()
    report = account(sender.commands)
    gens = generations(REDIS_URL)
    before_opening = check_threshold(report, downs, gens, calls)
    allowed, seen = check_open_calls(report, gens, calls)
    check_once(report, sender.commands, calls)
    check_record(report, gens)
    opened = Counter(
        "re-opened" if before.opened is not None else "opened"
        for before, gen in pairwise(gens)
        if gen.opened is not None
    )
    summary = (
        f"{len(calls)} sink calls ({sum(c.delivered for c in calls)} accepted),"
        f" {len(downs)} down periods, opened after {before_opening} failed calls;"
        f" {opened['opened']} openings, {opened['re-opened']} re-openings by a failed probe;"
        f" {seen} calls while open or half-open (allowed {allowed});"
        f" {time.monotonic() - began:.0f} s in all"
    )
    return row(NAME, report, seconds, left, summary)


def set_webhook(url: str, token: str, webhook_url: str) -> None:
    """Point the user's webhook at the sink (the API makes its signing secret)."""
    response = httpx.patch(
        f"{url}/api/v1/me/",
        json={"webhook_url": webhook_url},
        headers={"Authorization": f"Token {token}"},
        timeout=15,
    )
    response.raise_for_status()


def flap(sink: Sink, size: Size, downs: list[Period]) -> None:
    """After the warm-up, switch the sink down and up every ``size.period`` seconds, starting
    down (503, then closing connections, in turn); end up. Append each down period."""
    time.sleep(WARM_UP)
    for number in range(size.periods):
        if number % 2:
            sink.up()
            time.sleep(size.period)
            continue
        mode = Mode.ERROR if number % 4 == 0 else Mode.CLOSE
        start = sink.down(mode)
        time.sleep(size.period)
        downs.append(Period(start, sink.up(), mode))


class Sender:
    """The commands: creates of the todos, then reminders (webhook only) on them in turn."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Token {token}"}, timeout=15
        )
        self.commands: list[Command] = []

    def create_todos(self, n: int) -> list[str]:
        """Create ``n`` todos (each sent again, with its idempotency key, on no answer or a
        5xx); return the ids of those acknowledged."""
        ids: list[str] = []
        for _ in range(n):
            command = Command(id=str(uuid.uuid4()), kind="create")
            due = (datetime.now(tz=UTC) + timedelta(days=1)).isoformat()
            body = {"title": f"chaos flapping {command.id[:8]}", "due_at": due}
            headers = {"X-Request-ID": command.id, "Idempotency-Key": command.id}
            self._send(command, "/api/v1/todos/", body, headers, CREATE_ATTEMPTS)
            if command.stream_id:
                ids.append(command.stream_id)
        return ids

    def schedule(self, todos: list[str], n: int, span: float) -> None:
        """Schedule ``n`` reminders, evenly over ``span`` seconds, each due ``LEAD`` after."""
        started = time.monotonic()
        for number in range(n):
            time.sleep(max(0.0, started + number * span / n - time.monotonic()))
            command = Command(id=str(uuid.uuid4()), kind="reminder")
            remind_at = datetime.now(tz=UTC) + timedelta(seconds=LEAD)
            body = {"remind_at": remind_at.isoformat(), "channels": ["webhook"]}
            path = f"/api/v1/todos/{todos[number % len(todos)]}/reminders/"
            self._send(command, path, body, {"X-Request-ID": command.id}, 1)

    def _send(
        self, command: Command, path: str, body: dict[str, Any], headers: dict[str, str], tries: int
    ) -> None:
        response = send(command, tries, lambda: self.client.post(path, json=body, headers=headers))
        if command.outcome == "acknowledged":
            assert response is not None
            command.stream_id = response.json()["id"]
        self.commands.append(command)


def settle(deadline: float) -> bool:
    """Wait until every webhook notification is sent (a dead-lettered one comes back only
    when its dead letter is retried), or ``deadline`` seconds have passed; return whether
    there was anything to wait for."""
    until = time.monotonic() + deadline
    unsent = NotificationState.objects.filter(channel="webhook").exclude(
        status=NotificationState.Status.SENT
    )
    waited = False
    while unsent.exists() and time.monotonic() < until:
        waited = True
        time.sleep(1)
    return waited


def generations(redis_url: str, name: str = BREAKER) -> list[Generation]:
    """Return the breaker's generations from its own keys: ``g<n>:opened`` (the time it
    opened, for a generation entered by opening) and ``g<n>:exit`` (added as it was left,
    with an expiry of ``EXIT_KEY_SECONDS``: the time left tells when).

    A generation entered by opening starts at its ``opened`` time, which the breaker writes
    just after adding the exit key before it: exact, where the exit key's time left is read
    in whole milliseconds. (A failed probe reaches the sink a fraction of a millisecond
    before its worker re-opens the breaker; by the exit key alone a full run once placed
    that probe in the generation it opened, as a call while open.)"""
    breaker = CircuitBreaker(name)
    client = redis.Redis.from_url(redis_url)
    current = int(cache.get(breaker._key("gen")) or 1)
    numbers = range(1, current + 1)
    opened = [cache.get(breaker._key(f"g{number}:opened")) for number in numbers]
    ends: list[float] = []
    for number, next_opened in zip(numbers, [*opened[1:], None], strict=True):
        if next_opened is not None:  # the next generation opened: its own time, exact
            ends.append(next_opened)
            continue
        left_ms = client.pttl(cache.make_key(breaker._key(f"g{number}:exit")))
        now = time.time()
        ends.append(now - (EXIT_KEY_SECONDS * 1000 - left_ms) / 1000 if left_ms >= 0 else math.inf)
    starts = [0.0, *ends[:-1]]
    return [
        Generation(number, start, end, when)
        for number, start, end, when in zip(numbers, starts, ends, opened, strict=True)
    ]


def _between(calls: list[Call], start: float, end: float) -> list[Call]:
    return [c for c in calls if start <= c.at < end]


def check_threshold(
    report: Report, downs: list[Period], gens: list[Generation], calls: list[Call]
) -> list[int]:
    """Each down period opens the breaker, within its threshold of failed calls; return how
    many failed calls came before each opening."""
    counts: list[int] = []
    for number, down in enumerate(downs, start=1):
        at_start = next(g for g in gens if g.start <= down.start < g.end)
        if at_start.opened is not None:
            continue  # still open from before: its calls are the probes, counted below
        opening = next(
            (g for g in gens if g.opened is not None and down.start <= g.start < down.end), None
        )
        failed = [c for c in _between(calls, down.start, down.end) if not c.delivered]
        if opening is None:
            report.problems.append(
                f"down period {number} ({down.mode}): the breaker never opened;"
                f" {len(failed)} failed calls"
            )
            continue
        before = [c for c in failed if c.at < opening.start]
        counts.append(len(before))
        if len(before) > THRESHOLD + WORKERS - 1:
            report.problems.append(
                f"down period {number}: the breaker opened after {len(before)} failed calls"
                f" (threshold {THRESHOLD}, {WORKERS} workers); e.g. {_brief(before)}"
            )
    return counts


def check_open_calls(report: Report, gens: list[Generation], calls: list[Call]) -> tuple[int, int]:
    """In each open generation: while open, only the calls already under way when it opened;
    in all, those and the probes one half-open generation admits (a call under way may land
    after the half-open time on a slow machine). Return the calls allowed and seen while the
    breaker was not closed."""
    allowed = seen = 0
    for previous, gen in pairwise(gens):
        if gen.opened is None:
            continue
        under_way = WORKERS - 1 if previous.opened is None else MAX_PROBES - 1
        half_open = gen.opened + RESET
        while_open = _between(calls, gen.start, min(half_open, gen.end))
        in_all = _between(calls, gen.start, gen.end)
        limit = under_way + SUCCESSES - 1 + MAX_PROBES
        allowed += limit
        seen += len(in_all)
        if len(while_open) > under_way:
            report.problems.append(
                f"generation {gen.number}: {len(while_open)} calls while open (at most"
                f" {under_way} under way when it opened); e.g. {_brief(while_open)}"
            )
        if len(in_all) > limit:
            report.problems.append(
                f"generation {gen.number}: {len(in_all)} calls while open or half-open (at most"
                f" {limit}: {under_way} under way, then the probes it admits across all"
                f" workers); e.g. {_brief(in_all)}"
            )
    return allowed, seen


def check_once(report: Report, commands: list[Command], calls: list[Call]) -> None:
    """Every acknowledged reminder fired, and the webhook notification of every reminder that
    fired was accepted by the sink exactly once by idempotency key and is recorded sent."""
    fired = dict(
        Event.objects.filter(type="reminder.triggered").values_list("stream_id", "event_id")
    )
    reminders = {c.stream_id for c in commands if c.kind == "reminder" and c.stream_id}
    unfired = sorted(r for r in reminders if uuid.UUID(r) not in fired)
    report.flag("acknowledged reminders that never fired", len(unfired), unfired, into="lost")
    expected = {str(notification_id(event, "webhook")) for event in fired.values()}
    rows = dict(
        NotificationState.objects.filter(channel="webhook").values_list("notification_id", "status")
    )
    if {str(n) for n in rows} != expected:
        report.problems.append(f"{len(rows)} webhook notifications for {len(expected)} fired")
    accepted = Counter(c.key for c in calls if c.delivered)
    missing = sorted(expected - set(accepted))
    report.flag("webhook notifications the sink never accepted", len(missing), missing, into="lost")
    twice = {k: n for k, n in accepted.items() if n > 1}
    report.flag(
        "webhook calls accepted again with the same idempotency key",
        sum(n - 1 for n in twice.values()),
        sorted(twice.items()),
        into="duplicated",
    )
    unknown = sorted(set(accepted) - expected)
    if unknown:
        report.problems.append(f"{len(unknown)} accepted keys of no fired reminder: {unknown[:5]}")
    unsent = [(str(n), status) for n, status in rows.items() if status != "sent"]
    if unsent:
        report.problems.append(f"{len(unsent)} webhook notifications not sent: {unsent[:5]}")


def check_record(report: Report, gens: list[Generation]) -> None:
    """The breaker's transitions agree with its generations; its dead letters (failed probes
    that spent every attempt) were transient and are resolved."""
    recorded = BreakerTransition.objects.filter(breaker=BREAKER).count()
    if recorded != len(gens) - 1:
        report.problems.append(
            f"{recorded} breaker transitions recorded, {len(gens) - 1} generations left"
        )
    letters = list(DeadLetter.objects.values_list("pk", "handler", "kind", "status"))
    wrong = [
        letter
        for letter in letters
        if letter[1:] != ("notifications.deliver", "transient", DeadLetter.Status.RESOLVED)
    ]
    if wrong:
        report.problems.append(f"{len(wrong)} dead letters not transient and resolved: {wrong[:5]}")


def _brief(calls: list[Call]) -> list[tuple[str, str, str]]:
    return [(f"{c.at:.3f}", c.key[:8], str(c.status)) for c in calls[:5]]
