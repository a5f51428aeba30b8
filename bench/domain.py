"""What the benchmarks write and run: a tiny event type and a no-op Celery task."""

from __future__ import annotations

import uuid

import redis
from celery import shared_task
from django.conf import settings

from apps.eventstore.aggregates import Aggregate, applies
from apps.eventstore.registry import DomainEvent, event


@event("bench.ticked")
class Ticked(DomainEvent):
    n: int


class Ticker(Aggregate):
    stream_type = "bench.ticker"

    def __init__(self, stream_id: uuid.UUID) -> None:
        super().__init__(stream_id)
        self.n = 0

    @applies(Ticked)
    def _ticked(self, event: Ticked) -> None:
        self.n = event.n


def new_ticker(events: int = 1) -> Ticker:
    ticker = Ticker(uuid.uuid4())
    for n in range(events):
        ticker.record(Ticked(n=n))
    return ticker


@shared_task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """The baseline of a task round trip: count that it ran, nothing else."""
    redis.Redis.from_url(settings.REDIS_URL).incr("bench:noop")
