"""A handler whose messages no worker takes: they wait in its own queue for a test to count.

``probe_queue`` (a fixture of every test) empties that queue before and after a test;
``open_counters`` appends events the probe subscribes to.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

import pytest
from django.conf import settings

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from tests.eventstore.counter import Counter, CounterOpened
from tests.support.broker import drain

PROBE = "test.relay-probe"
PROBE_QUEUE = "test-relay-probe"


@handles(CounterOpened, name=PROBE, queue=PROBE_QUEUE)
def relay_probe(recorded: RecordedEvent) -> None:
    """Never run: its messages stay in their own queue for the tests to count."""


@pytest.fixture
def probe_queue() -> Iterator[str]:
    drain(settings.CELERY_BROKER_URL, PROBE_QUEUE)
    yield PROBE_QUEUE
    drain(settings.CELERY_BROKER_URL, PROBE_QUEUE)


def open_counters(count: int) -> list[RecordedEvent]:
    """Open ``count`` counters, one event each, published like any command's."""
    repo = Repository(Counter)
    return [repo.save(Counter.open(f"c{i}"), CommandContext())[0] for i in range(count)]


def probe_messages(broker_url: str | None = None) -> Tally[str]:
    """Remove the probe's waiting messages; return how many there were per event id."""
    messages = drain(broker_url or settings.CELERY_BROKER_URL, PROBE_QUEUE)
    return Tally(m["args"][1] for m in messages if m["args"][0] == PROBE)
