"""Scenario 11: two beats. A second beat process runs every periodic task alongside the
first, so each sweep is sent twice per interval and two runs of it often overlap: every
scheduled occurrence must still have one effect.

QUICK: 160 commands at 8 a second (20 s); full: 900 at 3 a second (5 minutes: at 8 a
second for that long, 2 workers on 2 loaded cores fall behind, and the reconciler's re-sends
of the waiting pairs keep them behind past the drain's deadline). Both beats run from before
the first command until the checks are done; the second is stopped even on error.

Each periodic task is given work:

- outbox sweep: ``OUTBOX_PUBLISH_ON_COMMIT=0`` in every process, so every outbox row is
  published by a sweep; each row must be published once (``attempts`` 1);
- reminder sweep: a quarter of the commands schedule a reminder 3-20 s ahead
  (QUICK, 3-8 s); each one not
  cancelled (a completed todo's saga cancels its pending ones) fires once, within one
  sweep interval + 5 s, and is notified once;
- saga sweep: every 3 s up to 3 running sagas get a deadline in the past (as if their
  step's message were lost); each is asked again at most once (one more step message in
  its stream), and at least one is, or the sweep was not exercised; recurring todos (half
  the creates) that are completed get their next occurrence once;
- ledger reconciler: every 2.5 s up to 2 deliver messages are taken off the ``handlers``
  queue (lost by the broker); each (pair, re-send number) is re-sent once in each life of
  the pair (an automatic retry of its dead letter queues it again, from re-send 0), and
  each lost pair is re-sent and ends;
- dead-letter sweep: one create in 30 fails permanently in ``chaos.poison-mix``, and
  business-rule dead letters are retried automatically after 1 s, at most 2 times
  (``DEAD_LETTER_AUTO_RETRY_*``); each letter must be auto-retried exactly twice.

Retention (hourly) is not given work: pruning would delete the rows the accounting counts.
Both beats must have sent each task whose interval fits twice in the run ("Sending due
task" in both logs), or the scenario proves nothing.
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from typing import Any

import redis
from django.db import connection

from apps.eventstore import following
from apps.eventstore.models import Event, OutboxMessage
from apps.reminders.models import ReminderState
from apps.resilience.models import DeadLetter, DeadLetterAction, Delivery
from apps.sagas.models import SagaInstance
from tests.chaos import processes
from tests.chaos.accounting import Report, account
from tests.chaos.drain import drain
from tests.chaos.effects import FAULTS_ON_KEY, PERMANENT, POISON
from tests.chaos.load import Load
from tests.chaos.scenarios.common import Users, base_url, row, set_email
from tests.chaos.scenarios.reminders_once import (
    BEAT_UP,
    check_fired,
    triggered_events,
    wait_logged,
)

NUMBER = 11
NAME = "two-beats"
FULL_MINUTES = 6
AUTO_RETRIES = 2
ENV = {
    "OUTBOX_PUBLISH_ON_COMMIT": "0",
    "DEAD_LETTER_AUTO_RETRY_KINDS": "business_rule",
    "DEAD_LETTER_AUTO_RETRY_SECONDS": "1",
    "DEAD_LETTER_AUTO_RETRY_LIMIT": str(AUTO_RETRIES),
    "DEAD_LETTER_SWEEP_SECONDS": "2",
}
MIX = {"create": 40, "update": 10, "complete": 25, "reminder": 25}
RECURRING_SHARE = 0.5
PERMANENT_EVERY = 30
BACKDATE_EVERY, BACKDATE_MAX = 3.0, 3
DROP_EVERY, DROP_MAX = 2.5, 2
MEDDLE_MARGIN = 2.0
SENDING = re.compile(r"Sending due task (.+?) \(")
RESENT = re.compile(r"reconciler re-sent (\S+) to (\S+) \(it was \w+; re-send (\d+)\)")


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from tests.chaos.harness import RECONCILER_THRESHOLD, REDIS_URL

    url, broker = base_url(cluster.port), redis.Redis.from_url(REDIS_URL)
    n, per_second = (160, 8.0) if quick else (900, 3.0)
    beat2 = second_beat(cluster)
    processes.start(beat2, cluster.env)
    try:
        set_email(url, users.api)
        if not wait_logged(beat2, beat2.starts, BEAT_UP):
            raise RuntimeError("the second beat did not start within 90 s")
        broker.set(FAULTS_ON_KEY, 1)
        started = time.monotonic()
        # Meddling stops just before the load ends: a message lost then is re-sent (10 s)
        # about when the last reminders come due (up to 20 s; QUICK, 8 s), so the drain
        # waits no longer.
        meddler = Meddler(broker, random.Random(seed), started + n / per_second - MEDDLE_MARGIN)
        meddler.start()
        try:
            load = Load(
                url,
                users.api,
                seed,
                per_second,
                mix=MIX,
                recurring_share=RECURRING_SHARE,
                faults=plan(n, seed),
                quick=quick,
            )
            commands = load.run(n)
        finally:
            meddler.stop()
        seconds, left = drain(REDIS_URL, RECONCILER_THRESHOLD + 120)
        letters_done = wait_auto_retries(60)
        duration = time.monotonic() - started
        report = account(commands)
        ticks = check_ticks(report, [cluster.beat, beat2], duration)
        findings = [
            check_outbox(report),
            check_reminders(report),
            check_sagas(report, meddler.backdated, quick=quick),
            check_resends(report, cluster, meddler.dropped),
            check_dead_letters(report, letters_done),
            check_next_occurrences(report),
        ]
    finally:
        processes.stop(beat2)
    findings.append(f"{meddler.nudges_dropped} projection nudges lost")
    summary = f"{ticks}; " + "; ".join(findings)
    return row(NAME, report, seconds, left, summary)


def second_beat(cluster: processes.Cluster) -> processes.Proc:
    """Return a second beat like the cluster's, with a schedule file and a log of its own."""
    argv = list(cluster.beat.argv)
    argv[argv.index("--schedule") + 1] = str(cluster.log_dir / f"{cluster.prefix}beat-schedule-2")
    return processes.Proc("beat2", argv, cluster.log_dir / f"{cluster.prefix}beat2.log")


def plan(n: int, seed: int) -> list[str | None]:
    """Return one fault (or None) per create, in order: a permanent failure of the poison
    handler for every ``PERMANENT_EVERY``-th create, from a seeded offset (a QUICK run has
    about 64 creates: 2 or 3 of them)."""
    offset = random.Random(seed).randrange(PERMANENT_EVERY // 2)
    return [PERMANENT if i % PERMANENT_EVERY == offset else None for i in range(n)]


class Meddler:
    """While the commands flow (until the monotonic ``until``): every ``BACKDATE_EVERY`` s
    put up to ``BACKDATE_MAX`` running sagas past their deadline, and every ``DROP_EVERY``
    s take up to ``DROP_MAX`` deliver messages off the ``handlers`` queue; keep what it did."""

    def __init__(self, broker: redis.Redis, rng: random.Random, until: float) -> None:
        self.broker, self.rng, self.until = broker, rng, until
        self.backdated: dict[str, str] = {}  # saga id -> the type of the step message it waits for
        self.dropped: set[tuple[str, str]] = set()  # (handler, event id)
        self.nudges_dropped = 0
        self.stopped = threading.Event()
        self.threads = [
            threading.Thread(target=self._every, args=(BACKDATE_EVERY, self._backdate)),
            threading.Thread(target=self._every, args=(DROP_EVERY, self._drop)),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()

    def _every(self, seconds: float, act: Any) -> None:
        while not self.stopped.wait(seconds) and time.monotonic() < self.until:
            act()
        connection.close()  # this thread's own connection

    def _backdate(self) -> None:
        """Put running sagas that wait for a step past their deadline, each once."""
        table = SagaInstance._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET deadline = now() - interval '1 second' WHERE id IN"
                f" (SELECT id FROM {table} WHERE state = 'running' AND deadline > now()"
                "  AND NOT (id::text = ANY(%s::text[])) ORDER BY random() LIMIT %s"
                "  FOR UPDATE SKIP LOCKED)"
                " RETURNING id, type, current_step",
                [list(self.backdated), BACKDATE_MAX],
            )
            for saga, kind, step in cursor.fetchall():
                self.backdated[str(saga)] = f"saga.{kind}.{step}"

    def _drop(self) -> None:
        """Take the newest messages off the handlers queue, as a broker might lose them
        (looking for up to 2 s: the queue fills in bursts, at each outbox sweep). A lost
        deliver message is the reconciler's to re-send; a lost nudge of a projection's
        follower, the outbox sweep's to repeat (the accounting finds any projection lag)."""
        wanted, deadline = self.rng.randint(1, DROP_MAX), time.monotonic() + 2
        while wanted and time.monotonic() < deadline:
            raw = self.broker.lpop("handlers")
            if not isinstance(raw, bytes):
                time.sleep(0.01)
                continue
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            if message["headers"]["task"] == following.FOLLOW_TASK:
                self.nudges_dropped += 1
            else:
                self.dropped.add((str(args[0]), str(args[1])))
            wanted -= 1


def wait_auto_retries(timeout: float) -> bool:
    """Wait until every dead letter has had its automatic retries (pending, no retry due);
    return whether that happened within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = DeadLetter.objects.exclude(
            status=DeadLetter.Status.PENDING, next_retry_at=None
        ).exists()
        running = Delivery.objects.filter(handler=POISON).exclude(
            status__in=[Delivery.Status.SUCCEEDED, Delivery.Status.DEAD_LETTERED]
        )
        if not busy and not running.exists():
            return True
        connection.close()
        time.sleep(1)
    return False


def check_ticks(report: Report, beats: list[processes.Proc], duration: float) -> str:
    """Both beats sent every task whose interval fits twice into the run; return a summary."""
    from django_celery_beat.models import PeriodicTask

    every = {
        task.name: task.interval.every * _SECONDS[task.interval.period]
        for task in PeriodicTask.objects.select_related("interval").exclude(interval=None)
    }
    expected = sorted(name for name, seconds in every.items() if seconds * 2 <= duration)
    sent = [Counter(SENDING.findall(beat.log.read_text(errors="replace"))) for beat in beats]
    for beat, counts in zip(beats, sent, strict=True):
        missing = [name for name in expected if not counts[name]]
        if missing:
            report.problems.append(f"{beat.name} never sent {missing}: it was not ticking")
    return "ticks sent " + ", ".join(
        f"{beat.name} {sum(counts.values())}" for beat, counts in zip(beats, sent, strict=True)
    )


_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "microseconds": 1e-6}


def check_outbox(report: Report) -> str:
    """Every outbox row published once, by one sweep."""
    rows = OutboxMessage.objects.all()
    twice = list(rows.filter(attempts__gt=1, last_error="").values_list("pk", "attempts"))
    report.flag("outbox rows published more than once", len(twice), twice, into="duplicated")
    failed = rows.exclude(last_error="").count()
    if failed:
        report.problems.append(f"{failed} outbox rows failed to publish with no fault injected")
    return f"{rows.count()} outbox rows published by the sweeps"


def check_reminders(report: Report) -> str:
    """Every reminder not cancelled fired once, on time, and was notified once."""
    ours = {
        str(r)
        for r in ReminderState.objects.exclude(status="cancelled").values_list(
            "reminder_id", flat=True
        )
    }
    fired = check_fired(report, ours, [])
    events = [e for r, e, _, _ in triggered_events()]
    from apps.notifications.models import NotificationState

    per_event = Counter(
        str(e)
        for e in NotificationState.objects.filter(source_event_id__in=events).values_list(
            "source_event_id", flat=True
        )
    )
    missing = [e for e in events if not per_event[e]]
    report.flag("firings with no notification", len(missing), missing, into="lost")
    twice = [(e, n) for e, n in per_event.items() if n > 1]
    report.flag("firings notified twice", sum(n - 1 for _, n in twice), twice, into="duplicated")
    return (
        f"{len(fired.lateness)} reminders fired, late by max {fired.max:.1f} s,"
        f" p99 {fired.p99:.1f} s"
    )


def check_sagas(report: Report, backdated: dict[str, str], *, quick: bool = False) -> str:
    """Each saga asked again at most once per time it was put past its deadline (one more
    message for the step it waited for), and at full size at least one was. (A QUICK run
    backdates about a dozen, and each may take its step before the next sweep, 5 s on: a
    clean-clone CI once saw all 12 do so.)"""
    # A step's message is of type "saga.<saga>.<step>[.undo]"; the saga's own life events
    # ("saga.started", "saga.completed", ...) have one dot.
    asks = Counter(
        (str(stream), kind)
        for stream, kind in Event.objects.filter(stream_type="saga").values_list(
            "stream_id", "type"
        )
        if kind.count(".") >= 2
    )
    again = {key: n - 1 for key, n in asks.items() if n > 1}
    allowed = {(saga, kind): 1 for saga, kind in backdated.items()}
    doubled = [(k, n) for k, n in again.items() if n > allowed.get(k, 0)]
    report.flag(
        "saga steps asked again more than once per overdue",
        sum(n - allowed.get(k, 0) for k, n in doubled),
        doubled,
        into="duplicated",
    )
    if not again and not quick:
        report.problems.append(
            f"none of {len(backdated)} overdue sagas was asked again: the saga sweep did nothing"
        )
    return f"{len(backdated)} sagas put past their deadline, {len(again)} asked again"


def check_resends(report: Report, cluster: processes.Cluster, dropped: set[tuple[str, str]]) -> str:
    """No (pair, re-send number) re-sent twice in one life of the pair; every dropped pair
    re-sent. An automatic retry of the pair's dead letter queues it again from re-send 0,
    so a pair has one life more than its letter's automatic retries: for such a pair the
    check counts per pair, not per life (a double re-send in one life hides behind a life
    that made fewer)."""
    lines: Counter[tuple[str, str, str]] = Counter()
    for worker in cluster.workers:
        lines.update(RESENT.findall(worker.log.read_text(errors="replace")))
    lives = {
        (str(event), handler): 1 + retries
        for event, handler, retries in DeadLetter.objects.values_list(
            "event_id", "handler", "auto_retries"
        )
    }
    twice = [(k, n) for k, n in lines.items() if n > lives.get((k[0], k[1]), 1)]
    report.flag(
        "reconciler re-sends made twice", sum(n - 1 for _, n in twice), twice, into="duplicated"
    )
    resent = {(handler, event) for event, handler, _ in lines}
    if not dropped:
        report.problems.append("no message was lost: the reconciler was not exercised")
    unsent = sorted(dropped - resent)
    if unsent:
        report.problems.append(f"{len(unsent)} lost messages never re-sent: {unsent[:5]}")
    return f"{len(dropped)} messages lost, {sum(lines.values())} re-sends"


def check_dead_letters(report: Report, done: bool) -> str:
    """Every dead letter is the poison handler's and was auto-retried exactly the limit."""
    if not done:
        report.problems.append("the dead letters' automatic retries did not end within 60 s")
    others = list(DeadLetter.objects.exclude(handler=POISON).values_list("handler", "kind"))
    if others:
        report.problems.append(f"dead letters with no fault injected: {others[:5]}")
    retries = Counter(
        DeadLetterAction.objects.filter(action=DeadLetterAction.Action.AUTO_RETRY).values_list(
            "dead_letter_id", flat=True
        )
    )
    letters = list(DeadLetter.objects.values_list("pk", "auto_retries"))
    wrong = [(pk, n, retries[pk]) for pk, n in letters if (n, retries[pk]) != (AUTO_RETRIES,) * 2]
    more = [w for w in wrong if w[2] > AUTO_RETRIES]
    report.flag(
        "automatic dead-letter retries beyond the limit",
        sum(w[2] - AUTO_RETRIES for w in more),
        more,
        into="duplicated",
    )
    if len(wrong) > len(more):
        report.problems.append(
            f"dead letters not auto-retried {AUTO_RETRIES} times (id, count, actions):"
            f" {[w for w in wrong if w not in more][:5]}"
        )
    if not letters:
        report.problems.append("no dead letter: the dead-letter sweep was not exercised")
    return f"{len(letters)} dead letters, {sum(retries.values())} automatic retries"


def check_next_occurrences(report: Report) -> str:
    """Each completed recurring todo whose saga completed has its next occurrence."""
    recurring = {
        str(stream): data.get("series_id")
        for stream, data in Event.objects.filter(type="todo.created").values_list(
            "stream_id", "data"
        )
        if data.get("recurrence")
    }
    completed = set(
        str(s)
        for s in Event.objects.filter(type="todo.completed").values_list("stream_id", flat=True)
    )
    finished = set(
        str(s)
        for s in SagaInstance.objects.filter(state=SagaInstance.State.COMPLETED).values_list(
            "subject_id", flat=True
        )
    )
    expected = [t for t in recurring if t in completed and t in finished]
    missing = [t for t in expected if str(_next_id(t, recurring[t])) not in recurring]
    report.flag(
        "completed recurring todos with no next occurrence", len(missing), missing, into="lost"
    )
    return f"{len(expected)} next occurrences"


def _next_id(todo: str, series: str | None) -> uuid.UUID:
    """Return the id of ``todo``'s next occurrence (``Todo.next_occurrence_id``)."""
    return uuid.uuid5(uuid.UUID(series or todo), f"next-of:{todo}")
