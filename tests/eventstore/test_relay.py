"""The outbox relay: every committed event reaches the broker once, through crashes and outages."""

from __future__ import annotations

import threading
from collections import Counter as Tally

import pytest
from django.conf import settings
from kombu import Connection

from apps.eventstore import relay
from apps.eventstore.models import OutboxMessage
from tests.support.broker import PrivateRedis, drain, free_port
from tests.support.probe import open_counters, probe_messages
from tests.support.threads import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def test_committed_events_are_published_right_after_commit(probe_queue: str) -> None:
    opened = open_counters(3)

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
    opened = open_counters(120)
    start = threading.Barrier(2, timeout=10)

    def sweeper() -> int:
        start.wait()
        return relay.sweep()

    published = [f.result() for f in run_in_threads(sweeper, [(), ()])]

    assert sum(published) == 120
    assert all(p > 0 for p in published), "both relays should have taken part"
    assert probe_messages(settings.CELERY_BROKER_URL) == Tally(str(e.event_id) for e in opened)
    assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {1}
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def test_a_row_not_published_while_the_broker_was_down_is_published_by_the_next_sweep(
    settings,
) -> None:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    broker = PrivateRedis(free_port())
    broker.start()
    try:
        [first] = open_counters(1)
        with Connection(broker.url) as conn:
            assert relay.publish_pending(connection=conn) == 1
        assert probe_messages(broker.url) == Tally([str(first.event_id)])

        broker.stop()
        [second] = open_counters(1)
        with Connection(broker.url, connect_timeout=1) as conn:
            assert relay.publish_pending(connection=conn) == 0
        row = OutboxMessage.objects.get(event__event_id=second.event_id)
        assert row.published_at is None
        assert row.attempts == 1
        assert row.last_error

        broker.start()
        with Connection(broker.url) as conn:
            assert relay.publish_pending(connection=conn) == 1
        assert probe_messages(broker.url) == Tally([str(second.event_id)])
        row.refresh_from_db()
        assert row.published_at is not None
        assert row.attempts == 2
    finally:
        broker.stop()


def test_the_sweep_leaves_fresh_rows_to_the_on_commit_relay(probe_queue: str, settings) -> None:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    settings.OUTBOX_SWEEP_GRACE_SECONDS = 3600
    open_counters(2)

    assert relay.sweep() == 0
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 2


def test_the_publish_copies_switch_sends_each_message_that_many_times(
    probe_queue: str, settings
) -> None:
    # Fault injection for `make chaos` (duplicate delivery): each subscriber gets 2 copies.
    settings.EVENTSTORE_PUBLISH_COPIES = 2
    opened = open_counters(3)

    assert probe_messages(settings.CELERY_BROKER_URL) == Tally({str(e.event_id): 2 for e in opened})

    relay.send_delivery("test.relay-probe", opened[0].event_id)
    assert probe_messages(settings.CELERY_BROKER_URL) == Tally({str(opened[0].event_id): 2})
