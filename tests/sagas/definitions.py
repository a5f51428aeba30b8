"""A saga whose steps each test scripts through Redis, run by real workers.

``test-trip`` reserves, charges, confirms and announces a trip named by its trigger.
``script("<trip>:charge", "transient", "transient")`` makes the next two runs of the
charge step fail (``"business_rule"``: for good; ``"hang"``: past its 2 s timeout;
``"block"``: hold its transaction open, effect written, so a test can kill it);
``"<trip>:reserve.undo"`` scripts the reservation's compensation. Each step that takes
effect appends one event to an effect stream of (step, trip) in the step's own
transaction, so counting that stream's events counts effects.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis
from django.conf import settings

from apps.eventstore import store
from apps.eventstore.models import Event
from apps.eventstore.registry import DomainEvent, RecordedEvent, event
from apps.eventstore.subscriptions import handles
from apps.resilience.policies import RetryPolicy, Strategy
from apps.resilience.taxonomy import BusinessRuleViolation, ErrorKind, TransientError
from apps.sagas import orchestrator
from apps.sagas.definitions import SagaDefinition, SagaRun, Step
from tests.resilience.handlers import EffectRecorded, next_step

NAME = "test-trip"
# How long a step scripted "block" holds its transaction open (below its 2 s timeout).
BLOCK_SECONDS = 1.5
EFFECTS = uuid.UUID("0b6f6a52-4f5e-4d38-8a61-8b7d3c1e2f90")
# Quick retries, so a test sees a step fail twice and succeed within a second or two.
QUICK = {
    ErrorKind.TRANSIENT: RetryPolicy(Strategy.FIXED, max_attempts=4, base_delay=0.1),
    ErrorKind.TIMEOUT: RetryPolicy(Strategy.FIXED, max_attempts=2, base_delay=0.1),
}


@event("test.trip.requested")
class TripRequested(DomainEvent):
    name: str


def effect_stream(step: str, trip: str) -> uuid.UUID:
    return uuid.uuid5(EFFECTS, f"{step}:{trip}")


def effects(step: str, trip: str) -> int:
    """Return how many times ``step`` (``reserve``, ``reserve.undo``...) took effect."""
    return Event.objects.filter(stream_id=effect_stream(step, trip)).count()


def _act(step: str, run: SagaRun) -> Mapping[str, Any]:
    """Do what the script says for ``step`` of this trip, then record one effect."""
    trip = str(run.context["trip"])
    behaviour = next_step(f"{trip}:{step}")
    if behaviour == "transient":
        raise TransientError(f"{step}: the dependency reset the connection")
    if behaviour == "business_rule":
        raise BusinessRuleViolation(f"{step}: that is not allowed now")
    if behaviour == "hang":
        time.sleep(10)  # past the step's timeout
    _record(step, trip, run)
    if behaviour == "block":
        _block(f"{trip}:{step}")
    return {f"{step}_done": True}


def _record(step: str, trip: str, run: SagaRun) -> None:
    stream_id = effect_stream(step, trip)
    store.append(
        stream_type="test.effect",
        stream_id=stream_id,
        expected_version=Event.objects.filter(stream_id=stream_id).count(),
        events=[EffectRecorded(handler=step, source=run.saga_id)],
        context=run.command,
    )


def _block(name: str) -> None:
    """With the effect written in the step's open transaction, publish this process's pid
    as ``running:<trip>:<step>`` and wait for ``release:<trip>:<step>`` (at most 1.5 s,
    inside the step's 2 s timeout), so a test can kill the worker mid-step: the kill must
    roll the effect back."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set(f"running:{name}", os.getpid())
    deadline = time.monotonic() + BLOCK_SECONDS
    while not client.exists(f"release:{name}") and time.monotonic() < deadline:
        time.sleep(0.02)


def running_pid(trip: str, step: str) -> int | None:
    """Return the pid of the process blocked in ``step`` of ``trip`` (None before)."""
    pid = redis.Redis.from_url(settings.REDIS_URL).get(f"running:{trip}:{step}")
    return int(pid) if pid else None


def _step(name: str, *, compensates: bool = True, required: bool = True) -> Step:
    return Step(
        name,
        action=lambda run: _act(name, run),
        compensation=(lambda run: _act(f"{name}.undo", run)) if compensates else None,
        timeout=2.0,
        retry=QUICK,
        compensation_retry=QUICK,
        required=required,
        deadline=60.0,
    )


TRIP = orchestrator.register(
    SagaDefinition(
        name=NAME,
        steps=(
            _step("reserve"),
            _step("charge"),
            _step("confirm", compensates=False),
            _step("announce", compensates=False, required=False),
        ),
    )
)


@handles(TripRequested, name="test.trip.start")
def start_trip(recorded: RecordedEvent) -> None:
    assert isinstance(recorded.payload, TripRequested)
    orchestrator.start(
        NAME,
        trigger=recorded,
        subject_id=recorded.stream_id,
        context={"trip": recorded.payload.name},
    )


def request_trip(name: str) -> RecordedEvent:
    """Append a trip request (its saga starts when a worker handles it); return it."""
    events: list[DomainEvent] = [TripRequested(name=name)]
    return store.append(
        stream_type="test.trip",
        stream_id=uuid.uuid4(),
        expected_version=0,
        events=events,
        context=store.CommandContext(actor_id="test"),
    )[0]
