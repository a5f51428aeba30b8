"""Helpers of the orchestrator tests: trips, their sagas, their streams and step logs."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings

from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.relay import DELIVER_TASK
from apps.resilience import runtime
from apps.resilience.models import Attempt, DeadLetter, Delivery
from apps.sagas import definitions
from apps.sagas.models import SagaInstance, SagaStep
from tests.sagas.definitions import NAME, effects
from tests.support.broker import Message, take_messages
from tests.support.waiting import wait_until

QUEUES = ("handlers", "default", "maintenance")
DONE = (
    SagaInstance.State.COMPLETED,
    SagaInstance.State.COMPENSATED,
    SagaInstance.State.FAILED,
)


STEPS = ("reserve", "charge", "confirm", "announce")
UNDONE = ("reserve.undo", "charge.undo")


def all_effects(trip: str) -> dict[str, int]:
    """How many times each step and compensation of the trip took effect."""
    return {step: effects(step, trip) for step in (*STEPS, *UNDONE)}


def once(*steps: str) -> dict[str, int]:
    """Effects of a trip where exactly ``steps`` took effect, once each."""
    return {step: int(step in steps) for step in (*STEPS, *UNDONE)}


def trip_name(label: str) -> str:
    """A trip name no other test (nor an earlier run's scripts in Redis) uses."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


def handler(step: str, *, undo: bool = False) -> str:
    """The handler (and message type) of ``step`` of the test trip, or of its undo."""
    return definitions.handler_name(NAME, step, undo=undo)


def saga_of(trigger: RecordedEvent) -> SagaInstance | None:
    return SagaInstance.objects.filter(type=NAME, trigger_event_id=trigger.event_id).first()


def wait_for_saga(trigger: RecordedEvent, *states: str, timeout: float = 30.0) -> SagaInstance:
    """Poll until the trip's saga is in one of ``states`` (any final state by default)."""
    wanted = states or DONE

    def reached() -> SagaInstance | None:
        saga = saga_of(trigger)
        return saga if saga is not None and saga.state in wanted else None

    return wait_until(reached, timeout=timeout, message=f"the saga to reach {wanted}")


def stream(saga: SagaInstance) -> list[Event]:
    """The saga's events, in log order."""
    return list(Event.objects.filter(stream_id=saga.id).order_by("position"))


def types(saga: SagaInstance) -> list[str]:
    return [row.type for row in stream(saga)]


def step_log(saga: SagaInstance) -> list[tuple[str, str, int, str, str, bool]]:
    """The saga's step log in the order written: (step, phase, attempt, status, kind, final)."""
    return [
        (row.step, row.phase, row.attempt, row.status, row.error_kind, row.final)
        for row in SagaStep.objects.filter(saga=saga).order_by("id")
    ]


def message_ids(saga: SagaInstance, step: str, *, undo: bool = False) -> list[uuid.UUID]:
    """The ids of the messages that asked for ``step`` (or its undo), oldest first."""
    return [row.event_id for row in stream(saga) if row.type == handler(step, undo=undo)]


def delivery_of(step: str, event_id: uuid.UUID, *, undo: bool = False) -> Delivery | None:
    return Delivery.objects.filter(handler=handler(step, undo=undo), event_id=event_id).first()


def attempts_of(step: str, event_id: uuid.UUID, *, undo: bool = False) -> list[Attempt]:
    return list(
        Attempt.objects.filter(
            delivery__handler=handler(step, undo=undo), delivery__event_id=event_id
        ).order_by("id")
    )


def letter_of(step: str, event_id: uuid.UUID, *, undo: bool = False) -> DeadLetter:
    return DeadLetter.objects.get(handler=handler(step, undo=undo), event_id=event_id)


def take_waiting() -> list[Message]:
    """Take every message waiting in the broker off it (a message lost, or held back)."""
    return [
        message for queue in QUEUES for message in take_messages(settings.CELERY_BROKER_URL, queue)
    ]


def run_messages(messages: list[Message]) -> list[str]:
    """Run each delivery message once in this process, as a worker would; return the
    handlers run. What the runs send waits in the broker for the next round."""
    ran = []
    for message in messages:
        assert message.task == DELIVER_TASK, message
        runtime.run(None, *message.args, **message.kwargs)
        ran.append(str(message.args[0]))
    return ran


def run_round() -> list[str]:
    """Run what waits in the broker now, once (not what those runs send)."""
    return run_messages(take_waiting())


def payloads(saga: SagaInstance, event_type: str) -> list[dict[str, Any]]:
    return [row.data for row in stream(saga) if row.type == event_type]
