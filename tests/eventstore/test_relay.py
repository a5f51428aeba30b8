"""The outbox relay: every committed event reaches the broker once, through crashes and outages."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator

import pytest
from django.conf import settings
from kombu import Connection

from apps.eventstore import relay
from apps.eventstore.models import OutboxMessage
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from tests.eventstore.counter import Counter, CounterOpened
from tests.support.broker import PrivateRedis, drain, free_port
from tests.support.threads import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)
PROBE_QUEUE = "test-relay-probe"


@handles(CounterOpened, name="test.relay-probe", queue=PROBE_QUEUE)
def relay_probe(recorded: RecordedEvent) -> None:
    """Never run: its messages stay in their own queue for the tests to count."""


@pytest.fixture
def probe_queue() -> Iterator[str]:
    drain(settings.CELERY_BROKER_URL, PROBE_QUEUE)
    yield PROBE_QUEUE
    drain(settings.CELERY_BROKER_URL, PROBE_QUEUE)


def _open_counters(count: int) -> list[RecordedEvent]:
    repo = Repository(Counter)
    return [repo.save(Counter.open(f"c{i}"), CommandContext())[0] for i in range(count)]


def _probe_messages(broker_url: str) -> Tally[str]:
    return Tally(
        m["args"][1] for m in drain(broker_url, PROBE_QUEUE) if m["args"][0] == "test.relay-probe"
    )


def test_committed_events_are_published_right_after_commit(probe_queue: str) -> None:
    opened = _open_counters(3)

    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()
    messages = drain(settings.CELERY_BROKER_URL, probe_queue)
    assert [(m["task"], m["args"]) for m in messages] == [
        ("backstop.deliver", ["test.relay-probe", str(e.event_id)]) for e in opened
    ]
    assert {m["id"] for m in messages} == {
        relay.delivery_task_id("test.relay-probe", e.event_id) for e in opened
    }


def test_two_relays_sweeping_at_once_publish_every_row_exactly_once(
    probe_queue: str, settings
) -> None:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    settings.OUTBOX_SWEEP_GRACE_SECONDS = 0
    settings.OUTBOX_BATCH_SIZE = 7
    opened = _open_counters(120)
    start = threading.Barrier(2, timeout=10)

    def sweeper() -> int:
        start.wait()
        return relay.sweep()

    published = [f.result() for f in run_in_threads(sweeper, [(), ()])]

    assert sum(published) == 120
    assert all(p > 0 for p in published), "both relays should have taken part"
    assert _probe_messages(settings.CELERY_BROKER_URL) == Tally(str(e.event_id) for e in opened)
    assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {1}
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def test_a_row_not_published_while_the_broker_was_down_is_published_by_the_next_sweep(
    settings,
) -> None:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    broker = PrivateRedis(free_port())
    broker.start()
    try:
        [first] = _open_counters(1)
        with Connection(broker.url) as conn:
            assert relay.publish_pending(connection=conn) == 1
        assert _probe_messages(broker.url) == Tally([str(first.event_id)])

        broker.stop()
        [second] = _open_counters(1)
        with Connection(broker.url, connect_timeout=1) as conn:
            assert relay.publish_pending(connection=conn) == 0
        row = OutboxMessage.objects.get(event__event_id=second.event_id)
        assert row.published_at is None
        assert row.attempts == 1
        assert row.last_error

        broker.start()
        with Connection(broker.url) as conn:
            assert relay.publish_pending(connection=conn) == 1
        assert _probe_messages(broker.url) == Tally([str(second.event_id)])
        row.refresh_from_db()
        assert row.published_at is not None
        assert row.attempts == 2
    finally:
        broker.stop()


def test_the_sweep_leaves_fresh_rows_to_the_on_commit_relay(probe_queue: str, settings) -> None:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    settings.OUTBOX_SWEEP_GRACE_SECONDS = 3600
    _open_counters(2)

    assert relay.sweep() == 0
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 2
