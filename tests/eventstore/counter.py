"""A small aggregate, its events and a handler, used to exercise the event store."""

from __future__ import annotations

import uuid
from typing import Any, Self

from django.core.cache import cache

from apps.eventstore.aggregates import Aggregate, applies
from apps.eventstore.registry import DomainEvent, RecordedEvent, event, upcaster
from apps.eventstore.subscriptions import handles


@event("test.counter.opened")
class CounterOpened(DomainEvent):
    label: str


@event("test.counter.incremented")
class Incremented(DomainEvent):
    by: int


@event("test.counter.relabelled", version=2)
class Relabelled(DomainEvent):
    label: str
    reason: str


@upcaster("test.counter.relabelled", from_version=1)
def _relabelled_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # v1 called the field "name" and had no reason.
    return {"label": data.pop("name"), "reason": "unknown"}


class Counter(Aggregate):
    stream_type = "test.counter"

    def __init__(self, stream_id: uuid.UUID) -> None:
        super().__init__(stream_id)
        self.label = ""
        self.total = 0

    @classmethod
    def open(cls, label: str) -> Counter:
        counter = cls(uuid.uuid4())
        counter.record(CounterOpened(label=label))
        return counter

    def increment(self, by: int = 1) -> None:
        if by <= 0:
            raise ValueError("by must be positive")
        self.record(Incremented(by=by))

    @applies(CounterOpened)
    def _opened(self, event: CounterOpened) -> None:
        self.label = event.label

    @applies(Incremented)
    def _incremented(self, event: Incremented) -> None:
        self.total += event.by

    @applies(Relabelled)
    def _relabelled(self, event: Relabelled) -> None:
        self.label = event.label


class SnapshottingCounter(Counter):
    stream_type = "test.snapshotting-counter"
    snapshot_every = 3

    def to_snapshot(self) -> dict[str, Any]:
        return {"label": self.label, "total": self.total}

    @classmethod
    def from_snapshot(cls, stream_id: uuid.UUID, version: int, state: dict[str, Any]) -> Self:
        counter = cls(stream_id)
        counter.label, counter.total, counter.version = state["label"], state["total"], version
        return counter


def deliveries(handler: str, event_id: uuid.UUID) -> int:
    """Return how many times ``handler`` ran on ``event_id`` (counted in Redis)."""
    return cache.get(f"delivered:{handler}:{event_id}", 0)


@handles(CounterOpened, Incremented, name="test.count-deliveries")
def count_deliveries(recorded: RecordedEvent) -> None:
    key = f"delivered:test.count-deliveries:{recorded.event_id}"
    cache.add(key, 0, timeout=3600)
    cache.incr(key)
