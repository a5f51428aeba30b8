"""Scenario 9: a rebuild under live writes. A history of todos is loaded, then the todos
read model is rebuilt (``rebuild_projection todos``) while commands keep arriving through
the API; after its switch the read model must equal a cold replay, with no event missed at
the switch.

1. Before the processes start, load the history: ``HISTORY`` todo.created events (QUICK
   20,000; full 200,000) through the event store (``Repository.save_many``, 500 to a
   commit), their outbox rows marked published at once — a log older than this run, whose
   deliveries the accounting does not expect (``history_until``) — and build the read model
   from it with a first rebuild.
2. Start the processes; send commands (the mix of scenario 1) at 15 a second (full: 5);
   once 40 are acknowledged, rebuild ``todos`` into a new generation in this process
   (``projections.rebuild``, what ``rebuild_projection`` runs) while they flow; keep
   sending until 40 more are acknowledged after its switch.
3. Drain; count: besides the usual, the accounting's own cold rebuild must equal the live
   read model row for row (a create committed during the rebuild and missed at its switch
   would be a todo stream with no row, or a row that differs), and the rebuild must have
   switched generations while commands were being acknowledged on both sides of it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.chaos import processes
from tests.chaos.accounting import account
from tests.chaos.drain import drain
from tests.chaos.load import Load
from tests.chaos.scenarios.common import Users, base_url, row, set_email

NUMBER = 9
NAME = "rebuild-live"
FULL_MINUTES = 9  # 200,000 events loaded, the rebuild under load, a cold one to compare
ENV: dict[str, str] = {}
PROCESSES = False  # started after the history is loaded
PER_SECOND = 15.0
# Full size: the rebuild of 200,000 events takes minutes of the machine beside the
# workers; at what they carry meanwhile the backlog drains within the deadline.
FULL_PER_SECOND = 5.0
BATCH = 500
AROUND = 40  # commands acknowledged before the rebuild, and after its switch


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    from apps.eventstore import projections
    from tests.chaos.harness import BROKER_URL, RECONCILER_THRESHOLD

    history = 20_000 if quick else 200_000
    started = time.monotonic()
    until = load_history(history)
    projections.rebuild("todos", batch=2000)
    loaded = time.monotonic() - started
    cluster.start()
    url = base_url(cluster.port)
    set_email(url, users.api)
    load = Load(url, users.api, seed, PER_SECOND if quick else FULL_PER_SECOND, quick=quick)
    done = threading.Event()
    sender = threading.Thread(target=_send, args=(load, done), name="load")
    sender.start()
    try:
        _until_acknowledged(load, AROUND)  # commands flowing before the rebuild begins
        before = projections.current_generation("todos")
        acked_before = _acknowledged(load)
        result = projections.rebuild("todos", batch=2000)
        acked_at_switch = _acknowledged(load)
        _until_acknowledged(load, acked_at_switch + AROUND)  # and after its switch
    finally:
        done.set()
        sender.join()
    seconds, left = drain(BROKER_URL, RECONCILER_THRESHOLD + 120)
    report = account(load.commands, history_until=until)
    if projections.current_generation("todos") == before:
        report.problems.append("the rebuild under load did not switch generations")
    after = _acknowledged(load)
    if not acked_before or acked_at_switch == acked_before or after == acked_at_switch:
        report.problems.append(
            "commands were not acknowledged before, during and after the rebuild:"
            f" {acked_before}, {acked_at_switch}, {after}"
        )
    summary = (
        f"{history:,} events of history loaded and projected in {loaded:.0f} s; the rebuild"
        f" under load took {result.seconds:.1f} s while {acked_at_switch - acked_before}"
        " commands were acknowledged"
    )
    return row(NAME, report, seconds, left, summary)


def load_history(count: int) -> int:
    """Write ``count`` todos of the chaos user, published at once; return the last position."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from apps.eventstore.models import Event, OutboxMessage
    from apps.eventstore.repository import Repository
    from apps.eventstore.store import CommandContext
    from apps.todos.aggregates import Todo

    owner = get_user_model().objects.get(username="chaos").pk
    repo = Repository(Todo)
    settings.OUTBOX_PUBLISH_ON_COMMIT = False  # this process only: nothing of it is sent
    for start in range(0, count, BATCH):
        todos = [
            Todo.create(owner_id=owner, title=f"history {n}")
            for n in range(start, min(count, start + BATCH))
        ]
        repo.save_many(todos, CommandContext(actor_id="chaos-history"))
    OutboxMessage.objects.filter(published_at=None).update(published_at=timezone.now())
    last: int = Event.objects.order_by("-position").values_list("position", flat=True)[0]
    return last


def _send(load: Load, done: threading.Event) -> None:
    """Send commands (kept in ``load.commands``), 50 at a time, until ``done`` is set."""
    while not done.is_set():
        load.run(50, threads=2)


def _until_acknowledged(load: Load, count: int, timeout: float = 120) -> None:
    """Return once ``count`` commands were acknowledged (the load's pace sets how soon)."""
    deadline = time.monotonic() + timeout
    while _acknowledged(load) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} commands acknowledged in {timeout:.0f} s")
        time.sleep(0.1)


def _acknowledged(load: Load) -> int:
    with load.lock:
        return sum(1 for c in load.commands if c.outcome == "acknowledged")
