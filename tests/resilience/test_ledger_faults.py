"""No event lost when the broker loses messages: workers killed mid-flow, the broker flushed.

Each command writes to two kinds of consumer: the todos projection, whose follower reads
the log from its checkpoint (a lost nudge is repeated by the outbox sweep), and a per-event
handler (``test.count-deliveries``), whose lost messages the delivery ledger re-sends.

Each test runs on a Redis broker of its own (a private redis-server) with workers of its
own, so killing and flushing touch nothing else. The test process plays beat: it runs the
reconciler and the sweep's nudges while it waits, as the beat schedule does.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.contrib.auth import get_user_model
from django.db.models import Sum

from apps.eventstore import following, relay
from apps.eventstore.models import Event
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext
from apps.resilience.models import DeadLetter, Delivery, ProcessedMessage
from apps.resilience.services import ledger
from apps.todos import services
from apps.todos.models import TodoStats, TodoView
from tests.eventstore.counter import Counter, CounterOpened
from tests.support.broker import PrivateRedis, celery_broker, free_port
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess, start_worker

pytestmark = pytest.mark.django_db(transaction=True)
PER_EVENT = "test.count-deliveries"
# The worker's timings here: a killed run is due for a re-send 6 + 2 s after it started.
WORKER_ENV = {
    "RESILIENCE_HANDLER_SOFT_TIME_LIMIT": "5",
    "RESILIENCE_HANDLER_TIME_LIMIT": "6",
    "LEDGER_MARGIN_SECONDS": "2",
    "RESILIENCE_WORKER_LOST_LIMIT": "5",
}
QUEUED_SECONDS = 3.0
THRESHOLD = max(QUEUED_SECONDS, 6 + 2)


@pytest.fixture
def broker(settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateRedis]:
    """Point this process's Celery app at a private Redis for the test's length."""
    private = PrivateRedis(free_port())
    private.start()
    settings.LEDGER_QUEUED_SECONDS = QUEUED_SECONDS
    with celery_broker(private.url, monkeypatch):
        yield private
    private.stop()


def _worker(tmp_path: Path, broker: PrivateRedis, **env: str) -> WorkerProcess:
    env = {**WORKER_ENV, **env}
    return start_worker(tmp_path, new_session=True, CELERY_BROKER_URL=broker.url, **env)


def _owner() -> int:
    return get_user_model().objects.create_user(f"owner-{uuid.uuid4().hex[:8]}").pk


def _create_and_update(owner_id: int, count: int) -> list[uuid.UUID]:
    """Create ``count`` todos and update each once (two events for the projection), and
    open one counter per todo (one message for the per-event handler)."""
    context = CommandContext(actor_id=str(owner_id))
    ids = []
    for index in range(count):
        todo = services.create_todo(owner_id=owner_id, context=context, title=f"todo {index}")
        services.update_todo(
            owner_id=owner_id, todo_id=todo.id, context=context, title=f"todo {index}, edited"
        )
        Repository(Counter).save(Counter.open(f"counter {index}"), context)
        ids.append(todo.id)
    return ids


def _kill_holding_a_message(
    worker: WorkerProcess, broker: PrivateRedis, owner_id: int, lost: int, tmp_path: Path
) -> tuple[list[uuid.UUID], int]:
    """SIGKILL ``worker`` while it holds a message it has not acknowledged, creating todos
    until it holds one (a worker that keeps up with the test's writes on a loaded machine
    may hold none when a batch ends); return the todos created and how many messages killed
    workers now hold. Redis keeps those in kombu's ``unacked`` hash (``lost`` of them from
    earlier kills) and gives them back only after the visibility timeout, an hour: the
    ledger must re-send them. A worker that acknowledged its message between the check and
    the kill held nothing when it died: another is started and killed in turn."""
    held = redis.Redis.from_url(broker.url)
    created: list[uuid.UUID] = []
    deadline = time.monotonic() + 60
    while True:
        try:
            while held.hlen("unacked") <= lost:
                assert time.monotonic() < deadline, "the worker took no message in 60 s"
                created += _create_and_update(owner_id, 1)
        finally:
            worker.kill_group()
        now = int(held.hlen("unacked"))
        if now > lost:
            return created, now
        assert time.monotonic() < deadline, "no kill landed while the worker held a message"
        worker = _worker(tmp_path, broker)


def _all_projected(todo_ids: list[uuid.UUID]) -> bool:
    """Play beat (the reconciler, the sweep's nudges), then say whether every todo is in the
    read model at v2 and the per-event handler ran on every counter opened so far."""
    ledger.reconcile()
    following.nudge_lagging()
    handled = Delivery.objects.filter(handler=PER_EVENT, status="succeeded").count()
    opened = Event.objects.filter(type=CounterOpened.event_type).count()
    projected = TodoView.objects.filter(todo_id__in=todo_ids, version=2).count()
    return projected == len(todo_ids) and handled == opened


def _assert_each_effect_once(owner_id: int, todo_ids: list[uuid.UUID]) -> None:
    assert TodoView.objects.filter(todo_id__in=todo_ids).count() == len(todo_ids)
    stats = TodoStats.objects.filter(owner_id=owner_id).aggregate(total=Sum("total"))
    assert stats["total"] == len(todo_ids)  # a second application would count twice
    marks = ProcessedMessage.objects.filter(handler=PER_EVENT).count()
    assert marks == len(todo_ids)
    left = Delivery.objects.filter(handler=PER_EVENT).exclude(status="succeeded")
    assert not left.exists(), list(left.values_list("status", flat=True))
    assert not DeadLetter.objects.exists()


def test_500_events_reach_the_read_model_while_the_worker_is_killed_again_and_again(
    broker: PrivateRedis, tmp_path: Path
) -> None:
    owner_id = _owner()
    worker = _worker(tmp_path, broker)
    todo_ids: list[uuid.UUID] = []
    try:
        lost = 0  # messages killed workers held: Redis keeps them in kombu's unacked hash
        for batch in range(10):
            todo_ids += _create_and_update(owner_id, 25)
            if batch in (2, 5, 8):  # mid-flow: while the worker holds a message
                created, lost = _kill_holding_a_message(worker, broker, owner_id, lost, tmp_path)
                todo_ids += created
                worker = _worker(tmp_path, broker)
        # Within the reconciler's threshold plus 30 s of the last command, on a loaded machine.
        wait_until(
            lambda: _all_projected(todo_ids),
            timeout=THRESHOLD + 30,
            interval=0.5,
            message="every todo in the read model",
        )

        _assert_each_effect_once(owner_id, todo_ids)
        # The kills cost messages the broker will hold for an hour, yet each delivery among
        # them succeeded (re-sent by the ledger, or done before its worker died), and the
        # projection caught up past any follower's nudge among them (the sweep repeats it).
        held = _held_messages(broker)
        assert len(held) >= 3, held
        succeeded = {
            relay.delivery_task_id(PER_EVENT, event_id)
            for event_id in Delivery.objects.filter(
                handler=PER_EVENT, status="succeeded"
            ).values_list("event_id", flat=True)
        }
        for task, task_id in held:
            assert task in (relay.DELIVER_TASK, following.FOLLOW_TASK), task
            assert task == following.FOLLOW_TASK or task_id in succeeded, task_id
    finally:
        worker.stop()


def _held_messages(broker: PrivateRedis) -> list[tuple[str, str]]:
    """Return the task name and id of each message kombu keeps as unacknowledged."""
    held = []
    for raw in redis.Redis.from_url(broker.url).hvals("unacked"):
        headers = json.loads(raw)[0]["headers"]
        held.append((headers["task"], headers["id"]))
    return held


def test_events_whose_messages_were_flushed_from_the_broker_are_delivered(
    broker: PrivateRedis, tmp_path: Path
) -> None:
    owner_id = _owner()
    todo_ids = _create_and_update(owner_id, 50)  # no worker yet: the messages wait in Redis
    client = redis.Redis.from_url(broker.url)
    assert client.llen("handlers") >= 50

    client.flushdb()
    worker = _worker(tmp_path, broker)
    try:
        wait_until(
            lambda: _all_projected(todo_ids),
            timeout=THRESHOLD + 60,
            interval=0.5,
            message="every todo in the read model",
        )
        _assert_each_effect_once(owner_id, todo_ids)
        resent = Delivery.objects.filter(handler=PER_EVENT, resends__gte=1).count()
        assert resent == len(todo_ids)  # every one of them came from the ledger
    finally:
        worker.stop()


def test_a_broker_flushed_under_a_running_worker_gets_its_bindings_back(
    broker: PrivateRedis, tmp_path: Path
) -> None:
    """A flush drops the queue bindings the worker declared when it started (kombu then
    routes by queue name): new and re-sent messages still reach the running worker."""
    owner_id = _owner()
    worker = _worker(tmp_path, broker)
    try:
        first = _create_and_update(owner_id, 5)
        wait_until(lambda: _all_projected(first), timeout=60, message="the first todos")

        redis.Redis.from_url(broker.url).flushdb()
        second = _create_and_update(owner_id, 25)

        wait_until(
            lambda: _all_projected(second),
            timeout=THRESHOLD + 60,
            interval=0.5,
            message="the todos created after the flush",
        )
        _assert_each_effect_once(owner_id, first + second)
    finally:
        worker.stop()


def test_a_worker_tries_its_broker_again_every_few_seconds_through_an_outage(
    broker: PrivateRedis, tmp_path: Path
) -> None:
    """Celery's own back-off between reconnections grows to 30 s (2, 4, 6, ... s): a broker
    back after a minute could wait half a minute more for its workers. Backstop's consumer
    tries again after 1 s, then 1 s longer each time, up to BROKER_RECONNECT_MAX_SECONDS."""
    owner_id = _owner()
    worker = _worker(tmp_path, broker, BROKER_RECONNECT_MAX_SECONDS="2")
    tries = re.compile(r"Cannot connect to \S+: .*\. Trying again in (\d+) s \(try \d+\)")
    try:
        before = _create_and_update(owner_id, 2)
        wait_until(lambda: _all_projected(before), timeout=60, message="the first todos")

        broker.stop()
        # Six tries: 1 + 2 + 2 + 2 + 2 + 2 s apart here; Celery's would be 2 + 4 + ... + 12.
        wait_until(
            lambda: len(tries.findall(worker.output())) >= 6,
            timeout=60,
            message="the worker to try its broker six times",
        )
        broker.start()
        after = _create_and_update(owner_id, 2)
        wait_until(lambda: _all_projected(after), timeout=THRESHOLD + 60, message="the later todos")

        waits = [int(seconds) for seconds in tries.findall(worker.output())]
        assert waits[:3] == [1, 2, 2], waits
        assert max(waits) == 2, waits
        _assert_each_effect_once(owner_id, before + after)
    finally:
        worker.stop()
