"""What notifications do: request one per channel when a reminder fires, then deliver each."""

from __future__ import annotations

from typing import Any

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from apps.notifications import services
from apps.notifications.events import NotificationRequested
from apps.reminders.events import ReminderTriggered
from apps.resilience.classify import classify
from apps.resilience.hooks import DeadLetterView
from apps.resilience.taxonomy import ErrorKind


@handles(ReminderTriggered, name="notifications.request")
def request_notifications(recorded: RecordedEvent) -> None:
    services.request_for_reminder(recorded)


def _attempt_failed(exc: Exception, event: RecordedEvent) -> None:
    if classify(exc).kind is ErrorKind.UNAVAILABLE:
        return  # deferred behind an open breaker or a cooldown: nothing was attempted
    services.record_attempt_failed(event.stream_id, exc)


def _dead_lettered(letter: DeadLetterView, event: RecordedEvent) -> None:
    services.record_failed(
        event.stream_id,
        kind=letter.kind,
        error=f"{letter.exception_type}: {letter.message}",
        context=CommandContext(actor_id="system"),
    )


@handles(
    NotificationRequested,
    name="notifications.deliver",
    handle_error=_attempt_failed,
    on_dead_letter=_dead_lettered,
)
def deliver_notification(recorded: RecordedEvent) -> Any:
    """Send the notification; failures follow the taxonomy (breakers, Retry-After, dead letters)."""
    services.deliver(recorded.stream_id, CommandContext(actor_id="system").caused_by(recorded))
