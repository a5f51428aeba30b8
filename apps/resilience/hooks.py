"""What a handler's hooks receive, and how the runtime calls them.

``handle_error(exc, event)`` runs on every failed run; ``on_dead_letter(letter, event)``
once the pair is dead-lettered. ``event`` is the ``RecordedEvent`` the handler saw and
``letter`` a ``DeadLetterView``: a frozen copy of the letter's facts, so a hook can neither
change the row nor depend on the model's other columns.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.subscriptions import Subscription
from apps.resilience.models import DeadLetter
from apps.resilience.taxonomy import ErrorKind, Severity

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetterView:
    """A dead letter as an ``on_dead_letter`` hook sees it."""

    id: int
    handler: str
    kind: ErrorKind
    severity: Severity
    exception_type: str  # the exception's dotted path
    message: str
    attempts: int
    event_id: uuid.UUID | None

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterView:
        """Return the view of the ``letter`` row."""
        return cls(
            id=letter.pk,
            handler=letter.handler,
            kind=ErrorKind(letter.kind),
            severity=Severity(letter.severity),
            exception_type=letter.exception_type,
            message=letter.message,
            attempts=letter.attempts,
            event_id=letter.event_id,
        )


def call_error_hook(sub: Subscription, exc: Exception, event: RecordedEvent | None) -> None:
    """Call the handler's ``handle_error`` hook, if any; a hook can't stop the pipeline.

    No hook runs without an event this process could decode (a newer schema version)."""
    if sub.handle_error is None or event is None:
        return
    try:
        sub.handle_error(exc, event)
    except Exception:
        logger.exception("handle_error of %s raised; the pipeline goes on", sub.name)


def call_dead_letter_hook(
    sub: Subscription, letter: DeadLetter, event: RecordedEvent | None
) -> None:
    """Call the handler's ``on_dead_letter`` hook, if any; a hook can't stop the pipeline."""
    if sub.on_dead_letter is None or event is None:
        return
    try:
        sub.on_dead_letter(DeadLetterView.of(letter), event)
    except Exception:
        logger.exception("on_dead_letter of %s raised; the pipeline goes on", sub.name)
