"""End to end on the real services: commit -> relay -> Redis -> Celery worker -> handler."""

from __future__ import annotations

import pytest
from celery import current_app

from apps.eventstore.models import OutboxMessage
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext
from tests.eventstore.counter import Counter, deliveries
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
HANDLER = "test.count-deliveries"


def test_a_committed_event_reaches_its_handler_in_a_worker(worker) -> None:
    counter = Counter.open("piped")
    counter.increment(2)
    recorded = Repository(Counter).save(counter, CommandContext())

    for event in recorded:
        wait_until(lambda e=event: deliveries(HANDLER, e.event_id) == 1, message="delivery")
    wait_until(lambda: "delivered test.counter.incremented" in worker.output(), message="log")


def test_rows_a_crash_left_unpublished_are_delivered_by_the_beat_sweep_task(
    worker,
    settings,
) -> None:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False  # as if the process died right after commit
    [opened] = Repository(Counter).save(Counter.open("left behind"), CommandContext())
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 1

    current_app.send_task("backstop.outbox.sweep", queue="maintenance")

    wait_until(lambda: deliveries(HANDLER, opened.event_id) == 1, message="sweep delivery")
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()
