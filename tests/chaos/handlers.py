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

``chaos-completion`` (scenario 13) is a saga started by ``todo.completed`` while the Redis
key ``SAGAS_ON_KEY`` exists; otherwise its start handler does nothing. Its steps
``reserve``, ``charge`` and ``confirm`` each record one effect event in an effect stream of
(step, saga), as do the compensations of the first two (``reserve.undo``, ``charge.undo``).
The todo's title may name a step that fails for good (``fault:charge``,
``fault:confirm``: a business-rule failure before any effect), which makes the saga
compensate. While ``HOLD_KEY`` is set, the next step or compensation to run takes it,
writes its effect, publishes its pid in the hash ``HELD_KEY`` and holds its transaction
open (at most ``HOLD_SECONDS``) for the harness to SIGKILL its worker process: the one who
deletes the pid from the hash (``HDEL``) owns it, the killer or, past the hold, the step.
A saga in the set ``KILLED_KEY`` holds no more.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis
from django.conf import settings

from apps.eventstore import store
from apps.eventstore.models import Event
from apps.eventstore.registry import DomainEvent, RecordedEvent, event
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from apps.resilience.taxonomy import BusinessRuleViolation, TransientError
from apps.sagas import definitions, orchestrator
from apps.sagas.definitions import SagaDefinition, SagaRun, Step
from apps.todos.events import TodoCompleted, TodoCreated
from apps.todos.services import repository as todos
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


# -- the chaos saga (scenario 13) ---------------------------------------------------------

SAGA = "chaos-completion"
SAGA_START = "chaos.saga-start"
SAGA_STEPS = ("reserve", "charge", "confirm")
SAGA_COMPENSATED = ("reserve", "charge")  # the steps with a compensation
SAGAS_ON_KEY = "chaos:sagas-on"  # the saga starts only while this key exists
HOLD_KEY = "chaos:saga-hold"  # set: the next step to run holds still, to be killed
HELD_KEY = "chaos:saga-held"  # hash: pid -> "<handler> <saga id> <message event id>"
KILLED_KEY = "chaos:saga-killed"  # set: sagas a step of which was killed (they hold no more)
HOLD_SECONDS = 2.0
# How long a step may take in all (queued included) before the stuck-saga sweep resends it.
SAGA_STEP_DEADLINE = 5.0
_SAGA_FAULT = re.compile(r"\bfault:(charge|confirm)\b")


def saga_fault_of(title: str) -> str | None:
    """Return the step of the chaos saga that a todo's title makes fail for good, if any."""
    found = _SAGA_FAULT.search(title)
    return found.group(1) if found else None


def _saga_step(step: str, run: SagaRun, *, undo: bool) -> Mapping[str, Any]:
    """Fail if the saga's todo asks this step to; else record one effect (and hold)."""
    if not undo and run.context.get("fails_at") == step:
        raise BusinessRuleViolation(f"chaos: saga step {step} fails for good")
    handler = definitions.handler_name(SAGA, step, undo=undo)
    stream_id = effect_stream(run.saga_id, handler)
    store.append(
        stream_type=EFFECT_STREAM_TYPE,
        stream_id=stream_id,
        expected_version=Event.objects.filter(stream_id=stream_id).count(),
        events=[EffectRecorded(source=run.saga_id)],
        context=run.command,
    )
    _hold(handler, run)
    return {f"{step}_done": True}


def _hold(handler: str, run: SagaRun) -> None:
    """If the harness asked for a step to kill, be it: publish this pid and wait, the
    effect written and the transaction open. Whoever deletes the pid from ``HELD_KEY``
    first owns the step: the killer (the SIGKILL follows) or, past the hold, the step."""
    broker = redis.Redis.from_url(settings.REDIS_URL.split(",")[0])
    if broker.sismember(KILLED_KEY, str(run.saga_id)) or not broker.delete(HOLD_KEY):
        return
    pid = str(os.getpid())
    broker.hset(HELD_KEY, pid, f"{handler} {run.saga_id} {run.command.causation_id}")
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline and broker.hexists(HELD_KEY, pid):
        time.sleep(0.02)
    if not broker.hdel(HELD_KEY, pid):
        time.sleep(HOLD_SECONDS)  # claimed by the killer: its SIGKILL is on the way


def _chaos_step(name: str, *, compensates: bool) -> Step:
    return Step(
        name,
        action=lambda run: _saga_step(name, run, undo=False),
        compensation=(lambda run: _saga_step(name, run, undo=True)) if compensates else None,
        timeout=10.0,
        deadline=SAGA_STEP_DEADLINE,
    )


CHAOS_SAGA = orchestrator.register(
    SagaDefinition(
        name=SAGA,
        steps=tuple(_chaos_step(s, compensates=s in SAGA_COMPENSATED) for s in SAGA_STEPS),
    )
)


@handles(TodoCompleted, name=SAGA_START)
def start_chaos_saga(recorded: RecordedEvent) -> None:
    """While sagas are on, start the chaos saga, failing at the step the title names."""
    if not redis.Redis.from_url(settings.REDIS_URL.split(",")[0]).exists(SAGAS_ON_KEY):
        return
    fails_at = saga_fault_of(todos.load(recorded.stream_id).title)
    orchestrator.start(
        SAGA, trigger=recorded, subject_id=recorded.stream_id, context={"fails_at": fails_at}
    )
