"""The orchestrator: starts sagas and moves them from step to step, or back.

Every transition happens under the saga's row lock and only for the message the saga is
waiting for (``pending_event_id``): a redelivered, superseded or late message finds
another pending event and does nothing, so no step runs twice and none is skipped.

A step's action, its log row, the saga's next events (which carry the next step's
message through the outbox) and the new state commit in the handler's own transaction,
with the delivery's processed mark. A step that fails is retried by the runtime under the
step's policies; when it fails for good the runtime dead-letters it and calls
``after_final_failure``, which compensates the completed steps in reverse order (or, for a
step that may fail, goes on). A compensation that fails for good leaves the saga
``failed`` with a critical dead letter, escalated; the saga still waits for that message,
so retrying the dead letter (an operator's or the automatic retry) runs the compensation
again and, once it succeeds, goes on compensating.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.eventstore import store
from apps.eventstore.registry import DomainEvent, RecordedEvent
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from apps.resilience.classify import classify
from apps.resilience.hooks import DeadLetterView
from apps.resilience.services import dead_letters
from apps.resilience.taxonomy import Severity
from apps.sagas import definitions
from apps.sagas.definitions import SagaDefinition, SagaRun, Step
from apps.sagas.events import (
    STREAM_TYPE,
    SagaCompensated,
    SagaCompensating,
    SagaCompleted,
    SagaFailed,
    SagaStarted,
    SagaStepCompensated,
    SagaStepCompleted,
    SagaStepFailed,
)
from apps.sagas.models import SagaInstance, SagaStep

State = SagaInstance.State
Phase = SagaStep.Phase
# How much longer than its soft time limit a step may run before the worker kills it.
HARD_LIMIT_GRACE_SECONDS = 5.0
logger = logging.getLogger(__name__)


def register(saga: SagaDefinition) -> SagaDefinition:
    """Register ``saga`` and one handler for each step's action and compensation."""
    definitions.add(saga)
    for step in saga.steps:
        if step.action is not None:
            _subscribe(saga, step, undo=False)
        if step.compensation is not None:
            _subscribe(saga, step, undo=True)
    return saga


def _subscribe(saga: SagaDefinition, step: Step, *, undo: bool) -> None:
    def run(recorded: RecordedEvent) -> None:
        (_undo if undo else _run)(saga, step, recorded)

    def failed_attempt(exc: Exception, recorded: RecordedEvent) -> None:
        _failed_attempt(step, undo, exc, recorded)

    def dead_lettered(letter: DeadLetterView, recorded: RecordedEvent) -> None:
        after_final_failure(saga, step, undo, letter, recorded.stream_id, recorded.event_id)

    handles(
        definitions.message_type(saga.name, step.name, undo=undo),
        name=definitions.handler_name(saga.name, step.name, undo=undo),
        retry=step.compensation_retry if undo else step.retry,
        soft_time_limit=step.timeout,
        time_limit=step.timeout + HARD_LIMIT_GRACE_SECONDS,
        handle_error=failed_attempt,
        on_dead_letter=dead_lettered,
    )(run)


# -- starting ---------------------------------------------------------------------------


def start(
    saga_type: str,
    *,
    trigger: RecordedEvent,
    subject_id: uuid.UUID | None = None,
    context: Mapping[str, Any] | None = None,
) -> SagaInstance | None:
    """Start a saga of ``saga_type`` for ``trigger`` in the caller's transaction; return it,
    or None if that event already started one (a redelivered trigger).

    Steps without an action (done by the trigger itself) are logged completed at once;
    the first step with one is asked for, or the saga completes if there is none.
    """
    saga_def = definitions.definition(saga_type)
    if SagaInstance.objects.filter(type=saga_type, trigger_event_id=trigger.event_id).exists():
        return None
    saga = SagaInstance.objects.create(
        type=saga_type,
        correlation_id=trigger.metadata.correlation_id,
        trigger_event_id=trigger.event_id,
        subject_id=subject_id,
        context=dict(context or {}),
    )
    for step in saga_def.steps:
        if step.action is None:
            _log(saga, step, Phase.ACTION, SagaStep.Status.COMPLETED, attempt=0)
    command = _command(saga, trigger.event_id)
    started = SagaStarted(
        saga_type=saga_type,
        trigger_event_id=trigger.event_id,
        subject_id=subject_id,
        steps=[step.name for step in saga_def.steps],
    )
    first = saga_def.first()
    if first is None:
        _end(saga, State.COMPLETED, [started, SagaCompleted()], command)
    else:
        _ask(saga, first, undo=False, before=[started], command=command)
    saga.save()
    return saga


# -- running a step or a compensation (the handlers' bodies) ------------------------------


def _run(saga_def: SagaDefinition, step: Step, recorded: RecordedEvent) -> None:
    """Run ``step``'s action for the saga waiting for ``recorded``; ask for the next step."""
    saga = _locked(recorded.stream_id, recorded.event_id)
    if saga is None:
        return
    assert step.action is not None
    started = timezone.now()
    result = dict(step.action(_saga_run(saga, recorded.event_id)) or {})
    saga.context = {**saga.context, **result}
    _log(saga, step, Phase.ACTION, SagaStep.Status.COMPLETED, started_at=started)
    done = SagaStepCompleted(step=step.name, result=result)
    _go_on(saga_def, saga, step, [done], _command(saga, recorded.event_id))
    saga.save()


def _undo(saga_def: SagaDefinition, step: Step, recorded: RecordedEvent) -> None:
    """Run ``step``'s compensation for the saga waiting for ``recorded``; ask for the next.

    A ``failed`` saga waits for the compensation that failed: this is its dead letter
    retried, and once it succeeds the saga goes back to compensating."""
    saga = _locked(recorded.stream_id, recorded.event_id, undo=True)
    if saga is None:
        return
    assert step.compensation is not None
    started = timezone.now()
    step.compensation(_saga_run(saga, recorded.event_id))
    _log(saga, step, Phase.COMPENSATION, SagaStep.Status.COMPLETED, started_at=started)
    before: list[DomainEvent] = []
    if saga.state == State.FAILED:
        saga.state = State.COMPENSATING
        saga.finished_at = None
        before.append(SagaCompensating(failed_step=step.name, reason="its dead letter was retried"))
    before.append(SagaStepCompensated(step=step.name))
    _undo_next(saga_def, saga, before, _command(saga, recorded.event_id))
    saga.save()


def _failed_attempt(step: Step, undo: bool, exc: Exception, recorded: RecordedEvent) -> None:
    """Log a failed attempt of the step (the runtime decides whether another follows)."""
    saga = SagaInstance.objects.filter(
        pk=recorded.stream_id, pending_event_id=recorded.event_id
    ).first()
    if saga is None:
        return
    message = f"{type(exc).__name__}: {exc}"[:2000]
    phase = Phase.COMPENSATION if undo else Phase.ACTION
    _log(saga, step, phase, SagaStep.Status.FAILED, kind=classify(exc).kind, error=message)
    SagaInstance.objects.filter(pk=saga.pk).update(last_error=message)


def after_final_failure(
    saga_def: SagaDefinition,
    step: Step,
    undo: bool,
    letter: DeadLetterView,
    saga_id: uuid.UUID,
    event_id: uuid.UUID,
) -> None:
    """The step's message was dead-lettered: compensate, go on, or fail the saga.

    Called by the runtime once the dead letter is committed, and by the sweep for a saga
    whose hook never ran (the process died in between). A failed compensation leaves the
    saga ``failed`` but still waiting for its message: a retry of the dead letter (which
    may fail again, and land here again) is how it runs again.
    """
    with transaction.atomic():
        saga = _locked(saga_id, event_id, undo=undo)
        if saga is None:
            return
        command = _command(saga, event_id)
        error = f"{letter.kind}: {letter.message}"[:2000]
        saga.last_error = error
        _mark_final(saga, step, Phase.COMPENSATION if undo else Phase.ACTION)
        if undo:
            _end(
                saga,
                State.FAILED,
                [SagaFailed(step=step.name, kind=letter.kind, message=error)],
                command,
            )
            saga.pending_event_id = event_id  # its dead letter's retry runs it again
        else:
            failed = SagaStepFailed(
                step=step.name, kind=letter.kind, message=error, compensates=step.required
            )
            if step.required:
                begin_compensation(saga_def, saga, step.name, error, [failed], command)
            else:
                _go_on(saga_def, saga, step, [failed], command)
        saga.save()
    if undo:
        # An operator must act: the letter says so, whatever its kind's usual severity.
        dead_letters.raise_severity(
            letter.id, Severity.CRITICAL, reason=f"saga {saga_id} could not undo {step.name}"
        )


# -- transitions ------------------------------------------------------------------------


def _go_on(
    saga_def: SagaDefinition,
    saga: SagaInstance,
    step: Step,
    before: Sequence[DomainEvent],
    command: CommandContext,
) -> None:
    """Ask for the step after ``step``, or complete the saga."""
    following = saga_def.after(step.name)
    if following is None:
        _end(saga, State.COMPLETED, [*before, SagaCompleted()], command)
    else:
        _ask(saga, following, undo=False, before=before, command=command)


def begin_compensation(
    saga_def: SagaDefinition,
    saga: SagaInstance,
    failed_step: str,
    reason: str,
    before: Sequence[DomainEvent],
    command: CommandContext,
) -> None:
    """Start undoing the completed steps, latest first; the compensations find ``reason``
    in the context as ``compensation_reason``."""
    saga.state = State.COMPENSATING
    saga.context = {**saga.context, "compensation_reason": reason[:2000]}
    compensating = SagaCompensating(failed_step=failed_step, reason=reason[:2000])
    _undo_next(saga_def, saga, [*before, compensating], command)


def _undo_next(
    saga_def: SagaDefinition,
    saga: SagaInstance,
    before: Sequence[DomainEvent],
    command: CommandContext,
) -> None:
    """Ask for the next compensation (the latest completed step not yet undone), or end
    the saga compensated."""
    logged = SagaStep.objects.filter(saga=saga, status=SagaStep.Status.COMPLETED)
    done = set(logged.filter(phase=Phase.ACTION).values_list("step", flat=True))
    undone = set(logged.filter(phase=Phase.COMPENSATION).values_list("step", flat=True))
    remaining = [step for step in saga_def.to_undo(list(done)) if step.name not in undone]
    if remaining:
        _ask(saga, remaining[0], undo=True, before=before, command=command)
    else:
        _end(saga, State.COMPENSATED, [*before, SagaCompensated()], command)


def _ask(
    saga: SagaInstance,
    step: Step,
    *,
    undo: bool,
    before: Sequence[DomainEvent],
    command: CommandContext,
) -> None:
    """Append ``before`` and the message asking for ``step`` (or its compensation); wait
    for that message from now on, until the step's deadline."""
    asked = definitions.message(saga.type, step.name, undo=undo)
    recorded = _append(saga, [*before, asked], command)
    saga.current_step = step.name
    saga.pending_event_id = recorded[-1].event_id
    saga.deadline = timezone.now() + timedelta(seconds=step.deadline)


def _end(
    saga: SagaInstance, state: str, events: Sequence[DomainEvent], command: CommandContext
) -> None:
    """Append the saga's last events and put it in its final ``state``."""
    _append(saga, events, command)
    saga.state = state
    saga.pending_event_id = None
    saga.deadline = None
    saga.finished_at = timezone.now()


def resend(saga: SagaInstance, command: CommandContext, before: Sequence[DomainEvent]) -> None:
    """Ask again for the saga's current step (or compensation) with a new message: the
    old one, if it ever arrives, is stale. For the sweep and operators."""
    saga_def = definitions.definition(saga.type)
    undo = saga.state != State.RUNNING
    _ask(saga, saga_def.step(saga.current_step), undo=undo, before=before, command=command)


# -- helpers ------------------------------------------------------------------------------


def _locked(saga_id: uuid.UUID, event_id: uuid.UUID, *, undo: bool = False) -> SagaInstance | None:
    """Return the saga locked for update if it is waiting for ``event_id``; else None.

    ``undo``: ``event_id`` asks for a compensation, which a ``failed`` saga waits for too
    (the one that failed, until an operator resumes the saga or retries its letter)."""
    states = (*SagaInstance.ACTIVE, State.FAILED) if undo else SagaInstance.ACTIVE
    saga = (
        SagaInstance.objects.select_for_update()
        .filter(pk=saga_id, pending_event_id=event_id, state__in=states)
        .first()
    )
    if saga is None:
        logger.info("saga %s isn't waiting for %s: nothing to do", saga_id, event_id)
    return saga


def _append(
    saga: SagaInstance, events: Sequence[DomainEvent], command: CommandContext
) -> list[RecordedEvent]:
    recorded = store.append(
        stream_type=STREAM_TYPE,
        stream_id=saga.id,
        expected_version=saga.version,
        events=events,
        context=command,
    )
    saga.version = recorded[-1].version
    return recorded


def _command(saga: SagaInstance, cause: uuid.UUID) -> CommandContext:
    """Return the context of the saga's writes: its correlation, caused by ``cause``."""
    return CommandContext(
        actor_id=f"saga:{saga.type}", correlation_id=saga.correlation_id, causation_id=cause
    )


def _saga_run(saga: SagaInstance, cause: uuid.UUID) -> SagaRun:
    return SagaRun(
        saga_id=saga.id,
        subject_id=saga.subject_id,
        trigger_event_id=saga.trigger_event_id,
        context=MappingProxyType(dict(saga.context)),
        command=_command(saga, cause),
    )


def _log(
    saga: SagaInstance,
    step: Step,
    phase: str,
    status: str,
    *,
    attempt: int | None = None,
    started_at: Any = None,
    kind: str = "",
    error: str = "",
) -> None:
    """Add a row to the saga's step log (the attempt numbered after the step's earlier ones)."""
    if attempt is None:
        attempt = SagaStep.objects.filter(saga=saga, step=step.name, phase=phase).count() + 1
    SagaStep.objects.create(
        saga=saga,
        step=step.name,
        phase=phase,
        attempt=attempt,
        status=status,
        started_at=started_at,
        error_kind=kind,
        error_message=error,
    )


def _mark_final(saga: SagaInstance, step: Step, phase: str) -> None:
    """Mark the step's last failed attempt as the final one."""
    last = (
        SagaStep.objects.filter(saga=saga, step=step.name, phase=phase, status="failed")
        .order_by("-id")
        .first()
    )
    if last is not None:
        last.final = True
        last.save(update_fields=["final"])
