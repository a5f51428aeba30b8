"""A test-only handler loaded into the chaos processes (EVENTSTORE_EXTRA_HANDLER_MODULES).

Backstop has no slow handler, so this one makes kills land mid-task: for a fifth of the
``todo.created`` events it sleeps 0-1 s, then records its effect as one event in an *effect
stream* of its own, in the handler's transaction. The harness counts each stream's events:
0 with a succeeded delivery is a lost effect, more than 1 a duplicated one.
"""

from __future__ import annotations

import time
import uuid

from apps.eventstore import store
from apps.eventstore.models import Event
from apps.eventstore.registry import DomainEvent, RecordedEvent, event
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from apps.todos.events import TodoCreated
from tests.chaos.effects import EFFECT_STREAM_TYPE, NAME, effect_stream


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
    stream_id = effect_stream(recorded.event_id)
    store.append(
        stream_type=EFFECT_STREAM_TYPE,
        stream_id=stream_id,
        # Counted, not fixed at 0: a duplicate run appends version 2 rather than conflicting.
        expected_version=Event.objects.filter(stream_id=stream_id).count(),
        events=[EffectRecorded(source=recorded.event_id)],
        context=CommandContext(actor_id="system").caused_by(recorded),
    )
