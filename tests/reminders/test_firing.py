"""Due reminders fire exactly once: claimed by the beat sweep with SKIP LOCKED.

A tick is what beat sends every REMINDER_SWEEP_SECONDS: ``backstop.reminders.fire_due`` on
the "maintenance" queue. The tests send the ticks themselves (no beat runs), on the real
PostgreSQL and Redis. The tests of one reminder run the tick and its deliveries in this
process (``inline_worker``); those of hundreds run real worker subprocesses and discard the
follow-up deliveries: an in-process worker beside them would run those all itself, slowly,
and could take a tick meant for a worker.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from apps.eventstore.models import Event
from apps.eventstore.store import CommandContext
from apps.reminders import services
from apps.reminders.models import ReminderState
from apps.todos.services import bulk_create_todos
from tests.support.api import Api
from tests.support.broker import idle
from tests.support.threads import run_in_threads
from tests.support.waiting import wait_until
from tests.support.worker import CONSUMED_QUEUES, WorkerProcess, start_worker

pytestmark = pytest.mark.django_db(transaction=True)

FIRE_DUE = "backstop.reminders.fire_due"


def tick() -> str:
    """Send one beat tick of the reminder sweep; return its task id."""
    return current_app.send_task(FIRE_DUE, queue="maintenance").id


def schedule(api: Api, todo_id: str) -> str:
    """Schedule a reminder through the API (it must be in the future); return its id."""
    soon = (timezone.now() + timedelta(hours=1)).isoformat()
    response = api.post(f"todos/{todo_id}/reminders/", {"remind_at": soon})
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def make_due(*reminder_ids: str, ago: timedelta = timedelta(seconds=1)) -> datetime:
    """Move scheduled reminders into the past (the API refuses that); return their time."""
    when = timezone.now() - ago
    ReminderState.objects.filter(reminder_id__in=reminder_ids).update(remind_at=when)
    return when


def triggered_events(reminder_id: str | uuid.UUID) -> list[Event]:
    return list(Event.objects.filter(stream_id=reminder_id, type="reminder.triggered"))


def is_triggered(reminder_id: str) -> bool:
    return ReminderState.objects.get(reminder_id=reminder_id).status == "triggered"


def fired_twice() -> list[uuid.UUID]:
    """Return every reminder with more than one reminder.triggered event."""
    return list(
        Event.objects.filter(type="reminder.triggered")
        .values("stream_id")
        .annotate(n=Count("position"))
        .filter(n__gt=1)
        .values_list("stream_id", flat=True)
    )


def due_reminders(owner_id: int, count: int) -> list[uuid.UUID]:
    """Schedule ``count`` reminders (ten per todo, the limit) and make them all due."""
    context = CommandContext(actor_id="test")
    todos = bulk_create_todos(
        owner_id=owner_id,
        items=[{"title": f"todo {i}"} for i in range(-(-count // 10))],
        atomic=True,
        context=context,
    )
    later = timezone.now() + timedelta(hours=1)
    ids = []
    for n in range(count):
        todo = todos[n // 10].todo
        assert todo is not None
        state = services.schedule_reminder(
            owner_id=owner_id,
            todo_id=todo.id,
            remind_at=later + timedelta(seconds=n),
            channels=["email"],
            context=context,
        )
        ids.append(state.reminder_id)
    updated = ReminderState.objects.filter(reminder_id__in=ids).update(
        remind_at=timezone.now() - timedelta(seconds=1)
    )
    assert updated == count
    return ids


def sweep_outcomes(workers: list[WorkerProcess], task_ids: list[str]) -> dict[str, int | str]:
    """Return how each finished tick ended, from the workers' logs: how many reminders it
    fired, or the error it raised."""
    outcome = re.compile(
        rf"{re.escape(FIRE_DUE)}\[([0-9a-f-]+)\] "
        r"(?:succeeded in [^:]+: (\d+)|raised unexpected: (.*))"
    )
    found: dict[str, int | str] = {}
    for worker in workers:
        for task_id, fired, error in outcome.findall(worker.output()):
            if task_id in task_ids:
                found[task_id] = int(fired) if fired else error
    return found


def discard_follow_up_work() -> None:
    """Drop the queued work that hundreds of fired reminders cause (a notification each, for
    the notifications tests to prove) and wait until the workers are idle."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)

    def discarded() -> bool:
        client.delete(*CONSUMED_QUEUES)
        return idle(client, CONSUMED_QUEUES)

    # The workers first finish what they had already fetched (a few deliveries each: seconds,
    # the deadline allows for a machine loaded by another test run).
    wait_until(discarded, timeout=60, message="the workers to go idle")


@pytest.fixture
def many_fired(worker: WorkerProcess) -> Iterator[None]:
    """For a test that fires hundreds of reminders: their notifications are not its subject.

    (It depends on ``worker`` so it runs before the worker fixture waits for the worker to
    settle: it would otherwise wait for every notification to be sent.)"""
    yield
    discard_follow_up_work()


@pytest.fixture
def second_worker(worker: WorkerProcess, tmp_path: Path) -> Iterator[WorkerProcess]:
    """Another worker beside the session's ``worker``, as a second machine would run."""
    second = start_worker(tmp_path)
    try:
        yield second
    finally:
        try:
            discard_follow_up_work()
        finally:
            second.stop()  # even when discarding failed: a worker left running outlives the run


@pytest.mark.usefixtures("inline_worker")
def test_a_due_reminder_fires_once_recording_reminder_triggered(alice: Api) -> None:
    todo = alice.create()
    reminder_id = schedule(alice, todo["id"])
    remind_at = ReminderState.objects.get(reminder_id=reminder_id).remind_at
    make_due(reminder_id)
    before = timezone.now()

    tick()

    wait_until(lambda: is_triggered(reminder_id), message="the reminder to fire")
    state = ReminderState.objects.get(reminder_id=reminder_id)
    assert state.triggered_at is not None
    assert before <= state.triggered_at <= timezone.now()
    assert state.version == 2
    [event] = triggered_events(reminder_id)
    assert event.version == 2
    assert datetime.fromisoformat(event.data["triggered_at"]) == state.triggered_at
    assert datetime.fromisoformat(event.data["remind_at"]) == remind_at
    # A later tick (proved to have run by a second reminder it fires) leaves it alone.
    control = schedule(alice, todo["id"])
    make_due(control)
    tick()
    wait_until(lambda: is_triggered(control), message="the control reminder to fire")
    assert len(triggered_events(reminder_id)) == 1
    assert ReminderState.objects.get(reminder_id=reminder_id).triggered_at == state.triggered_at


def test_a_thousand_due_reminders_fire_exactly_once_with_two_workers_and_two_ticks(
    alice: Api, worker: WorkerProcess, second_worker: WorkerProcess
) -> None:
    ids = due_reminders(alice.user.pk, 1000)

    ticks = [tick(), tick()]  # two beats ticking at the same moment

    def both_finished() -> dict[str, int | str] | None:
        found = sweep_outcomes([worker, second_worker], ticks)
        return found if len(found) == len(ticks) else None

    outcomes = wait_until(both_finished, timeout=60, message="both ticks to finish")
    fired_by_tick = [fired for fired in outcomes.values() if isinstance(fired, int)]
    assert len(fired_by_tick) == 2, outcomes  # neither tick failed
    assert sum(fired_by_tick) == 1000, outcomes
    assert Event.objects.filter(type="reminder.triggered").count() == 1000
    assert fired_twice() == []
    fired = set(Event.objects.filter(type="reminder.triggered").values_list("stream_id", flat=True))
    assert fired == set(ids)
    assert ReminderState.objects.filter(reminder_id__in=ids, status="triggered").count() == 1000
    assert not ReminderState.objects.filter(reminder_id__in=ids, triggered_at=None).exists()


@pytest.mark.usefixtures("many_fired")
def test_two_sweeps_running_at_the_same_moment_never_fire_a_reminder_twice(alice: Api) -> None:
    ids = due_reminders(alice.user.pk, 300)
    start = threading.Barrier(2, timeout=30)

    def sweep() -> int:
        start.wait()
        return services.fire_due_reminders(batch=20)

    counts = [future.result() for future in run_in_threads(sweep, [(), ()])]

    assert sum(counts) == 300, counts
    assert Event.objects.filter(type="reminder.triggered").count() == 300
    assert fired_twice() == []
    assert ReminderState.objects.filter(reminder_id__in=ids, status="triggered").count() == 300


@pytest.mark.usefixtures("inline_worker")
def test_a_reminder_that_fell_due_while_no_worker_ran_fires_once_late_on_the_next_tick(
    alice: Api,
) -> None:
    todo = alice.create()
    reminder_id = schedule(alice, todo["id"])
    missed = make_due(reminder_id, ago=timedelta(hours=6))

    tick()
    tick()

    wait_until(lambda: is_triggered(reminder_id), message="the late reminder to fire")
    state = ReminderState.objects.get(reminder_id=reminder_id)
    assert state.triggered_at is not None
    assert state.triggered_at - missed >= timedelta(hours=6)
    # A third tick, proved to have run by the control reminder it fires, leaves it alone.
    control = schedule(alice, todo["id"])
    make_due(control)
    tick()
    wait_until(lambda: is_triggered(control), message="the control reminder to fire")
    assert len(triggered_events(reminder_id)) == 1


@pytest.mark.usefixtures("inline_worker")
def test_a_cancelled_or_already_triggered_reminder_never_fires(alice: Api) -> None:
    todo = alice.create()
    cancelled = schedule(alice, todo["id"])
    assert alice.delete(f"reminders/{cancelled}/").status_code == 200
    already = schedule(alice, todo["id"])
    make_due(already)
    tick()
    wait_until(lambda: is_triggered(already), message="the first reminder to fire")
    first_fired_at = ReminderState.objects.get(reminder_id=already).triggered_at
    control = schedule(alice, todo["id"])
    make_due(cancelled, already, control)

    tick()

    wait_until(lambda: is_triggered(control), message="the control reminder to fire")
    assert triggered_events(cancelled) == []
    assert ReminderState.objects.get(reminder_id=cancelled).status == "cancelled"
    assert len(triggered_events(already)) == 1
    assert ReminderState.objects.get(reminder_id=already).triggered_at == first_fired_at
    assert services.fire_due_reminders() == 0
