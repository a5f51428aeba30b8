"""What operators and the beat sweep do to sagas: resume, compensate, recover the overdue.

Each takes the saga's row lock, checks its state, and moves it by appending events, so
the step it asks for goes out through the outbox like any other message.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.eventstore.store import CommandContext
from apps.resilience.hooks import DeadLetterView
from apps.resilience.models import DeadLetter, Delivery
from apps.resilience.services import dead_letters
from apps.resilience.taxonomy import BusinessRuleViolation, NotFound
from apps.sagas import definitions, orchestrator
from apps.sagas.events import SagaCompensating, SagaStepFailed
from apps.sagas.models import SagaAction, SagaInstance

State = SagaInstance.State
logger = logging.getLogger(__name__)


class SagaNotFound(NotFound):
    def __init__(self, saga_id: uuid.UUID) -> None:
        super().__init__(f"no saga {saga_id}")


class SagaStateError(BusinessRuleViolation):
    """The saga is not in a state that allows this."""


def resume(saga_id: uuid.UUID, *, actor: Any, notes: str = "") -> SagaInstance:
    """Run the saga's current step (or compensation) again with a fresh message; a
    ``failed`` saga goes back to compensating from the compensation that failed, and the
    dead letter of that compensation is resolved: the fresh message replaces it."""
    with transaction.atomic():
        saga = _lock(saga_id)
        command = _operator(saga, actor)
        if saga.state == State.FAILED:
            _resolve_replaced_letter(saga, actor)
            saga.state = State.COMPENSATING
            saga.finished_at = None
            again = SagaCompensating(failed_step=saga.current_step, reason=_why("resumed", notes))
            orchestrator.resend(saga, command, [again])
        elif saga.state in SagaInstance.ACTIVE:
            orchestrator.resend(saga, command, [])
        else:
            raise SagaStateError(f"a {saga.state} saga has nothing to resume")
        saga.save()
        SagaAction.objects.create(
            saga=saga, action=SagaAction.Action.RESUMED, actor=actor, notes=notes
        )
    return saga


def compensate(saga_id: uuid.UUID, *, actor: Any, notes: str = "") -> SagaInstance:
    """Stop a running saga and undo its completed steps, latest first (a ``failed`` saga is
    resumed: its compensation runs again)."""
    with transaction.atomic():
        saga = _lock(saga_id)
        if saga.state == State.FAILED:
            return resume(saga_id, actor=actor, notes=notes)
        if saga.state != State.RUNNING:
            raise SagaStateError(f"a {saga.state} saga can't be compensated")
        reason = _why("compensated", notes)
        stopped = SagaStepFailed(
            step=saga.current_step, kind="operator", message=reason, compensates=True
        )
        saga_def = definitions.definition(saga.type)
        orchestrator.begin_compensation(
            saga_def, saga, saga.current_step, reason, [stopped], _operator(saga, actor)
        )
        saga.save()
        SagaAction.objects.create(
            saga=saga, action=SagaAction.Action.COMPENSATED, actor=actor, notes=notes
        )
    return saga


def recover_overdue(*, limit: int = 100) -> int:
    """Recover the active sagas past their deadline; return how many.

    1. Claim up to ``limit`` of them with ``FOR UPDATE SKIP LOCKED`` (a second beat skips
       them) in one transaction each.
    2. If the message the saga waits for was dead-lettered, the runtime's hook never moved
       it (its process died in between): do what the hook does, compensate or fail.
    3. Otherwise send the step in flight again as a fresh message; the old one is stale.
    """
    recovered = 0
    for _ in range(limit):
        with transaction.atomic():
            saga = (
                SagaInstance.objects.select_for_update(skip_locked=True)
                .filter(state__in=SagaInstance.ACTIVE, deadline__lt=timezone.now())
                .order_by("deadline")
                .first()
            )
            if saga is None:
                return recovered
            letter = _dead_letter_of(saga)
            if letter is None:
                logger.warning(
                    "saga %s is past its deadline at %s: asked again", saga.pk, saga.current_step
                )
                orchestrator.resend(saga, _system(saga), [])
                saga.save()
        if letter is not None:
            _after_dead_letter(saga, letter)
        recovered += 1
    return recovered


def _dead_letter_of(saga: SagaInstance) -> DeadLetter | None:
    """Return the dead letter of the message the saga waits for, if it was dead-lettered."""
    if saga.pending_event_id is None:
        return None
    undo = saga.state != State.RUNNING
    handler = definitions.handler_name(saga.type, saga.current_step, undo=undo)
    dead = Delivery.objects.filter(
        handler=handler, event_id=saga.pending_event_id, status=Delivery.Status.DEAD_LETTERED
    ).exists()
    if not dead:
        return None
    return DeadLetter.objects.filter(handler=handler, event_id=saga.pending_event_id).first()


def _after_dead_letter(saga: SagaInstance, letter: DeadLetter) -> None:
    saga_def = definitions.definition(saga.type)
    undo = saga.state != State.RUNNING
    step = saga_def.step(saga.current_step)
    assert saga.pending_event_id is not None
    orchestrator.after_final_failure(
        saga_def, step, undo, DeadLetterView.of(letter), saga.pk, saga.pending_event_id
    )


def _resolve_replaced_letter(saga: SagaInstance, actor: Any) -> None:
    """Resolve the open dead letter of the failed saga's compensation message."""
    handler = definitions.handler_name(saga.type, saga.current_step, undo=True)
    letter = DeadLetter.objects.filter(
        handler=handler, event_id=saga.pending_event_id, status__in=DeadLetter.OPEN
    ).first()
    if letter is not None:
        dead_letters.resolve(letter.pk, actor=actor, notes=f"saga {saga.pk} resumed instead")


def _lock(saga_id: uuid.UUID) -> SagaInstance:
    saga = SagaInstance.objects.select_for_update().filter(pk=saga_id).first()
    if saga is None:
        raise SagaNotFound(saga_id)
    return saga


def _operator(saga: SagaInstance, actor: Any) -> CommandContext:
    return CommandContext(
        actor_id=str(getattr(actor, "pk", None) or "operator"), correlation_id=saga.correlation_id
    )


def _system(saga: SagaInstance) -> CommandContext:
    return CommandContext(actor_id="system", correlation_id=saga.correlation_id)


def _why(action: str, notes: str) -> str:
    return f"{action} by an operator" + (f": {notes}" if notes else "")
