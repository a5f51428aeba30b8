"""The outbox relay: every committed event reaches the broker once, through crashes and outages."""

from __future__ import annotations

import os
import threading
import traceback
from collections import Counter as Tally
from collections.abc import Callable

import pytest
from django.conf import settings
from django.db import connections
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


def test_a_relay_that_dies_between_sending_and_marking_leaves_its_rows_to_the_sweep(
    probe_queue: str, settings
) -> None:
    # Fault injection for `make chaos` (the relay's crash window): the publishing process
    # exits right after sending, so its rows stay unpublished and the sweep sends them again.
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    settings.OUTBOX_SWEEP_GRACE_SECONDS = 0
    opened = open_counters(2)
    settings.EVENTSTORE_RELAY_CRASH_RATE = 1.0

    assert exit_code_of(relay.publish_pending) == 70

    assert probe_messages(settings.CELERY_BROKER_URL) == Tally(str(e.event_id) for e in opened)
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 2
    settings.EVENTSTORE_RELAY_CRASH_RATE = 0.0
    assert relay.sweep() == 2
    assert probe_messages(settings.CELERY_BROKER_URL) == Tally(str(e.event_id) for e in opened)
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def exit_code_of(function: Callable[[], object]) -> int | None:
    """Run ``function`` in a forked child with database connections of its own; return the
    child's exit status (None if it returned instead of exiting)."""
    pid = os.fork()
    if pid == 0:  # the child: forget the parent's connections (closing them would end them)
        for conn in connections.all(initialized_only=True):
            conn.connection = None
        try:
            function()
        except BaseException:
            traceback.print_exc()  # the test then fails on the status, with the cause shown
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return None if code == 0 else code
