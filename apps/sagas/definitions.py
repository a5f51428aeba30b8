"""Saga definitions: ordered steps, each with an action, an optional compensation, a
timeout and retry policies from the taxonomy; registered by name.

Registering a definition (``apps.sagas.orchestrator.register``) registers, for each step,
a message event type (``saga.<saga>.<step>``, and ``saga.<saga>.<step>.undo`` for its
compensation) and a handler subscribed to it alone. A step therefore runs like every
other delivery of the resilient runtime: its message goes through the outbox and the
ledger, it is retried by its own policies, killed past its own time limit (a
``timeout``-kind failure), and dead-lettered when it fails for good, which is when the
orchestrator compensates.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from apps.eventstore.registry import event
from apps.eventstore.store import CommandContext
from apps.resilience.policies import RetryPolicy
from apps.sagas.events import StepDue


@dataclass(frozen=True)
class SagaRun:
    """What a step's action or compensation is given: the saga, its context so far, and the
    command context its services must use (same correlation, caused by the step's message)."""

    saga_id: uuid.UUID
    subject_id: uuid.UUID | None
    trigger_event_id: uuid.UUID
    context: Mapping[str, Any]
    command: CommandContext


# An action returns what to add to the saga's context (for later steps and compensations).
Action = Callable[[SagaRun], Mapping[str, Any] | None]
Compensation = Callable[[SagaRun], object]


@dataclass(frozen=True)
class Step:
    """One step of a saga.

    ``action=None``: the step was done by what started the saga (completing the todo); it
    has nothing to run but may have a compensation. ``required=False``: the step may fail
    for good without undoing the others (a notification can't be unsent); its failure is
    recorded and the saga goes on.
    """

    name: str
    action: Action | None
    compensation: Compensation | None = None
    timeout: float = 30.0
    retry: Mapping[str, RetryPolicy] = field(default_factory=lambda: MappingProxyType({}))
    compensation_retry: Mapping[str, RetryPolicy] = field(
        default_factory=lambda: MappingProxyType({})
    )
    required: bool = True
    # How long the step may take in all (its retries included) before the sweep steps in.
    deadline: float = 600.0


@dataclass(frozen=True)
class SagaDefinition:
    """A saga: its name (stored, keep it stable) and its steps in order."""

    name: str
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        """Return the step called ``name`` (``KeyError`` if none)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"saga {self.name} has no step {name!r}")

    def after(self, name: str) -> Step | None:
        """Return the step after ``name`` that has an action, or None at the end."""
        names = [step.name for step in self.steps]
        return next((s for s in self.steps[names.index(name) + 1 :] if s.action), None)

    def first(self) -> Step | None:
        """Return the first step with an action (None: the saga has nothing to run)."""
        return next((step for step in self.steps if step.action), None)

    def to_undo(self, done: list[str]) -> list[Step]:
        """Return the steps of ``done`` that have a compensation, latest first."""
        return [step for step in reversed(self.steps) if step.name in done and step.compensation]


_definitions: dict[str, SagaDefinition] = {}
_message_types: dict[tuple[str, str, bool], type[StepDue]] = {}


def add(saga: SagaDefinition) -> None:
    """Add ``saga`` to the registry (``apps.sagas.orchestrator.register`` calls this)."""
    existing = _definitions.get(saga.name)
    if existing is not None and existing is not saga:
        raise ValueError(f"a saga named {saga.name!r} is already registered")
    _definitions[saga.name] = saga


def definition(name: str) -> SagaDefinition:
    """Return the saga registered as ``name`` (``KeyError`` if none)."""
    return _definitions[name]


def all_definitions() -> list[SagaDefinition]:
    """Return every registered saga, by name."""
    return sorted(_definitions.values(), key=lambda saga: saga.name)


def handler_name(saga: str, step: str, *, undo: bool) -> str:
    """Return the name of the handler that runs ``step`` of ``saga`` (or undoes it); it is
    also the type of the event that asks for it."""
    return f"saga.{saga}.{step}" + (".undo" if undo else "")


def message_type(saga: str, step: str, *, undo: bool) -> type[StepDue]:
    """Return (registering it the first time) the event type that asks for ``step``."""
    key = (saga, step, undo)
    if key not in _message_types:
        name = handler_name(saga, step, undo=undo)
        cls = type(
            f"Saga{_camel(saga)}{_camel(step)}{'Undo' if undo else ''}",
            (StepDue,),
            {"__module__": __name__, "__doc__": f"Asks for {name}."},
        )
        _message_types[key] = event(name)(cls)
    return _message_types[key]


def message(saga: str, step: str, *, undo: bool) -> StepDue:
    """Return the event that asks for ``step`` of ``saga`` to run (or to be undone)."""
    return message_type(saga, step, undo=undo)(step=step)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
