"""A saga's history in the log: one stream per saga (stream type ``saga``).

These carry the correlation id of the event that started the saga, so the trace of a
command shows its saga. Each step's and each compensation's message is an event too, of a
type of its own per (saga, step) (``apps.sagas.definitions``), so that each step is a
handler with its own retry policy and time limits.
"""

from __future__ import annotations

import uuid
from typing import Any

from apps.eventstore.registry import DomainEvent, event

STREAM_TYPE = "saga"


@event("saga.started")
class SagaStarted(DomainEvent):
    saga_type: str
    trigger_event_id: uuid.UUID
    subject_id: uuid.UUID | None = None
    steps: list[str]


@event("saga.step_completed")
class SagaStepCompleted(DomainEvent):
    step: str
    result: dict[str, Any] = {}


@event("saga.step_failed")
class SagaStepFailed(DomainEvent):
    step: str
    kind: str
    message: str
    # False: the step may fail (a notification can't be unsent) and the saga goes on.
    compensates: bool = True


@event("saga.compensating")
class SagaCompensating(DomainEvent):
    failed_step: str
    reason: str


@event("saga.step_compensated")
class SagaStepCompensated(DomainEvent):
    step: str


@event("saga.completed")
class SagaCompleted(DomainEvent):
    pass


@event("saga.compensated")
class SagaCompensated(DomainEvent):
    pass


@event("saga.failed")
class SagaFailed(DomainEvent):
    step: str
    kind: str
    message: str


class StepDue(DomainEvent):
    """Base of the per-step message events: run ``step`` (or undo it) of this saga."""

    step: str
