"""Test-only handlers loaded into the chaos processes (EVENTSTORE_EXTRA_HANDLER_MODULES).

Backstop has no slow handler, so ``chaos.slow-effect`` makes kills land mid-task: for a
fifth of the ``todo.created`` events it sleeps 0-1 s, then records its effect as one event
in an *effect stream* of its own, in the handler's transaction. The harness counts each
stream's events: 0 with a succeeded delivery is a lost effect, more than 1 a duplicated one.

``chaos.poison-mix`` records its effect the same way, after injecting the fault the todo's
title names (``fault:permanent|transient|kill``) while the Redis key ``FAULTS_ON_KEY``
exists: a business-rule failure, a transient failure for the first 3 runs, or the death of
its worker process on every run. An event in the Redis set ``HEALED_KEY`` gets no fault: the
bug fixed for it alone, while the same failure keeps hitting new events.
"""

from __future__ import annotations

import os
import time
import uuid

import redis
from django.conf import settings

from apps.eventstore import store
from apps.eventstore.models import Event
from apps.eventstore.registry import DomainEvent, RecordedEvent, event
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from apps.resilience.taxonomy import BusinessRuleViolation, TransientError
from apps.todos.events import TodoCreated
from tests.chaos.effects import (
    EFFECT_STREAM_TYPE,
    FAULTS_ON_KEY,
    HEALED_KEY,
    KILL,
    KILLS_KEY,
    NAME,
    PERMANENT,
    POISON,
    TRANSIENT,
    TRANSIENT_FAILURES,
    attempts_key,
    effect_stream,
    fault_of,
)


@event("chaos.effect.recorded")
class EffectRecorded(DomainEvent):
    source: uuid.UUID


def delay_of(event_id: uuid.UUID) -> float:
    """Return how long the handler sleeps on ``event_id``: 0-1 s for a fifth of events."""
    value = event_id.int
    return (value % 1000) / 1000 if value % 5 == 0 else 0.0


@handles(TodoCreated, name=NAME)
def slow_effect(recorded: RecordedEvent) -> None:
    """Sleep (sometimes), then append one effect event: a second run appends a second."""
    time.sleep(delay_of(recorded.event_id))
    _record_effect(recorded, NAME)


@handles(TodoCreated, name=POISON)
def poison_mix(recorded: RecordedEvent) -> None:
    """Fail as the todo's title asks while faults are on; then append one effect event."""
    payload = recorded.payload
    fault = fault_of(payload.title) if isinstance(payload, TodoCreated) else None
    broker = redis.Redis.from_url(settings.REDIS_URL.split(",")[0])
    healed = broker.sismember(HEALED_KEY, str(recorded.event_id))
    if fault is not None and broker.exists(FAULTS_ON_KEY) and not healed:
        _inject(broker, fault, recorded.event_id)
    _record_effect(recorded, POISON)


def _inject(broker: redis.Redis, fault: str, event_id: uuid.UUID) -> None:
    if fault == PERMANENT:
        raise BusinessRuleViolation("chaos: a permanent failure")
    if fault == TRANSIENT and broker.incr(attempts_key(event_id)) <= TRANSIENT_FAILURES:
        raise TransientError("chaos: a transient failure")
    if fault == KILL:
        broker.incr(KILLS_KEY)
        os._exit(1)  # the pool child dies mid-task, as a segfault or OOM kill would


def _record_effect(recorded: RecordedEvent, handler: str) -> None:
    stream_id = effect_stream(recorded.event_id, handler)
    store.append(
        stream_type=EFFECT_STREAM_TYPE,
        stream_id=stream_id,
        # Counted, not fixed at 0: a duplicate run appends version 2 rather than conflicting.
        expected_version=Event.objects.filter(stream_id=stream_id).count(),
        events=[EffectRecorded(source=recorded.event_id)],
        context=CommandContext(actor_id="system").caused_by(recorded),
    )
