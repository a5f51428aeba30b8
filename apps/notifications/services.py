"""Notification commands: a user's channels, requesting notifications, recording deliveries."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import BaseUserManager
from django.db import transaction
from django.db.models import Case, F, TextField, Value, When
from django.utils import timezone

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext, lock_for_transaction
from apps.notifications import channels, failures, targets
from apps.notifications.aggregates import REQUESTED, SENT, Notification
from apps.notifications.models import NotificationSettings, NotificationState
from apps.notifications.webhooks import HostDoesNotResolve, check_url
from apps.reminders.events import ReminderTriggered
from apps.resilience.taxonomy import InvalidInput, SecurityViolation
from apps.todos.events import TodoCompleted
from apps.todos.services import repository as todos

repository = Repository(Notification)
State = NotificationState.Status


class InvalidWebhookUrl(InvalidInput):
    """The webhook URL given can't be used; ``fields`` names it for the API's error body."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.fields = {"webhook_url": [message[:1].upper() + message[1:] + "."]}


def set_webhook(
    *, user_id: int, url: str | None = None, rotate_secret: bool = False
) -> tuple[NotificationSettings, str | None]:
    """Set, keep (None) or clear ("") the user's webhook URL; return the settings and a new secret.

    A secret is made when a URL is set where there was none, or when asked to rotate; it
    is returned only then, for the user to keep. Clearing the URL forgets the secret.

    A URL whose host does not resolve now is refused (a 400): most likely a typo, and the
    user is there to fix it. At delivery the same is transient and retried.
    """
    if url:
        try:
            check_url(url)
        except (InvalidInput, SecurityViolation, HostDoesNotResolve) as exc:  # a 400
            raise InvalidWebhookUrl(str(exc)) from exc
    row, _ = NotificationSettings.objects.get_or_create(user_id=user_id)
    if url is not None:
        row.webhook_url = url
    shown = None
    if not row.webhook_url:
        row.webhook_secret = ""
    elif rotate_secret or not row.webhook_secret:
        row.webhook_secret = shown = secrets.token_urlsafe(32)
    row.save()
    return row, shown


class InvalidCompletionChannels(InvalidInput):
    """The completion channels can't be used as they are; ``fields`` names them."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.fields = {"completion_channels": [message]}


def update_me(
    *,
    user_id: int,
    email: str | None = None,
    url: str | None = None,
    rotate_secret: bool = False,
    completion_channels: list[str] | None = None,
) -> tuple[NotificationSettings, str | None]:
    """Set the user's email address, webhook (as ``set_webhook``) and completion channels (None
    keeps each), all or none; return the settings and a new secret, if one was made."""
    with transaction.atomic():
        if email is not None:
            user = get_user_model().objects.select_for_update().get(pk=user_id)
            user.email = BaseUserManager.normalize_email(email)  # the domain in lower case
            user.save(update_fields=["email"])
        row, shown = set_webhook(user_id=user_id, url=url, rotate_secret=rotate_secret)
        _set_completion_channels(row, completion_channels)
        return row, shown


def _set_completion_channels(row: NotificationSettings, channels: list[str] | None) -> None:
    """Set the channels (None keeps them); refuse "webhook" while no webhook URL is set, which
    also refuses clearing the URL while "webhook" is one of them."""
    if channels is not None:
        row.completion_channels = list(channels)
    if "webhook" in row.completion_channels and not row.webhook_url:
        raise InvalidCompletionChannels(
            '"webhook" needs a webhook URL: set webhook_url, or leave "webhook" out'
        )
    if channels is not None:
        row.save(update_fields=["completion_channels", "updated_at"])


def request_for_reminder(triggered: RecordedEvent) -> list[uuid.UUID]:
    """Request one notification per channel of a triggered reminder; return their ids."""
    from apps.reminders.services import repository as reminders

    assert isinstance(triggered.payload, ReminderTriggered)
    reminder = reminders.load(triggered.stream_id)
    assert reminder.todo_id is not None  # a triggered reminder was scheduled for a todo
    todo = todos.load(reminder.todo_id)
    body = {
        "todo": {
            "id": str(todo.id),
            "title": todo.title,
            "due_at": _iso(todo.due_at),
            "priority": todo.priority,
        },
        "reminder": {"id": str(reminder.id), "remind_at": _iso(triggered.payload.remind_at)},
    }
    context = CommandContext(actor_id="system").caused_by(triggered)
    return request_notifications(
        source=triggered,
        owner_id=reminder.owner_id,
        channels=reminder.channels,
        body=body,
        context=context,
    )


def request_for_completion(*, completed: RecordedEvent, context: CommandContext) -> list[uuid.UUID]:
    """Tell the owner of a completed todo on each channel they chose for completions (none by
    default); return the notifications' ids, the ones requested before if any were."""
    assert isinstance(completed.payload, TodoCompleted)
    todo = todos.load(completed.stream_id)
    row = NotificationSettings.objects.filter(user_id=todo.owner_id).first()
    body = {
        "todo": {
            "id": str(todo.id),
            "title": todo.title,
            "completed_at": _iso(completed.payload.completed_at),
        },
    }
    return request_notifications(
        source=completed,
        owner_id=todo.owner_id,
        channels=row.completion_channels if row else [],
        body=body,
        context=context,
    )


def request_notifications(
    *,
    source: RecordedEvent,
    owner_id: int,
    channels: list[str],
    body: dict[str, Any],
    context: CommandContext,
) -> list[uuid.UUID]:
    """Request one notification of ``source`` per channel, with its delivery-list rows; return
    their ids. Once per source: when some were requested for it, return theirs, request none.

    1. Take a transaction lock on the source event: a concurrent run for it waits here.
    2. Find the source's notifications (``notification_source_idx``); if any, return them.
    3. Else append one ``notification.requested`` per channel and insert their rows.
    """
    with transaction.atomic():
        lock_for_transaction(f"notifications:{source.event_id}")
        done = list(
            NotificationState.objects.filter(source_event_id=source.event_id)
            .order_by("channel")
            .values_list("notification_id", flat=True)
        )
        if done:
            return done
        requested = [
            Notification.request(
                owner_id=owner_id,
                channel=channel,
                source_event_id=source.event_id,
                source_type=source.type,
                occurred_at=source.metadata.occurred_at,
                body=body,
            )
            for channel in channels
        ]
        repository.save_many(requested, context)
        shown = shown_targets(owner_id)
        NotificationState.objects.bulk_create(
            NotificationState(
                notification_id=notification.id,
                owner_id=owner_id,
                channel=notification.channel,
                target=shown.get(notification.channel, ""),
                status=State.REQUESTED,
                source_type=source.type,
                source_event_id=source.event_id,
            )
            for notification in requested
        )
    return [n.id for n in requested]


def deliver(notification_id: uuid.UUID, context: CommandContext) -> None:
    """Send a requested or failed notification on its channel and record it sent (in the
    caller's transaction); a failure raises, for the runtime to classify.

    A failed one is retried: the runtime re-runs a dead-lettered delivery only when its dead
    letter is retried (by an operator or the sweep). A sent one is never sent again.
    """
    notification = repository.load(notification_id)
    notification.retry()
    if notification.status != REQUESTED:
        return
    target = targets.shown(notification.channel, _send(notification))
    now = timezone.now()  # one instant in the event and the row: a rebuild gives the same
    notification.sent(at=now, target=target)
    repository.save(notification, context)
    NotificationState.objects.filter(notification_id=notification_id).update(
        status=State.SENT,
        target=target,
        sent_at=now,
        attempts=F("attempts") + 1,
        last_error="",
    )


def shown_targets(owner_id: int) -> dict[str, str]:
    """Return where the owner's notifications would go now, by channel, as shown to them."""
    email = get_user_model().objects.filter(pk=owner_id).values_list("email", flat=True).first()
    row = NotificationSettings.objects.filter(user_id=owner_id).first()
    return {
        "email": targets.shown("email", email or ""),
        "webhook": targets.shown("webhook", row.webhook_url if row else ""),
    }


def _send(notification: Notification) -> str:
    """Send the notification on its channel; return the address it went to."""
    user = get_user_model().objects.get(pk=notification.owner_id)
    if notification.channel == "email":
        return channels.send_email(notification, user.email)
    row = NotificationSettings.objects.filter(user_id=user.pk).first()
    if row is None or not row.webhook_url:
        raise channels.NoTarget("the user has no webhook URL")
    return channels.send_webhook(notification, row.webhook_url, row.webhook_secret)


def record_attempt_failed(notification_id: uuid.UUID, exc: BaseException) -> None:
    """Count a failed attempt and keep a message about it for the user's delivery list.

    Only a plain message (``failures``): the exception's detail is for operators, who find
    it in the delivery attempts and the dead letter.
    """
    rows = NotificationState.objects.filter(notification_id=notification_id)
    channel = rows.values_list("channel", flat=True).first()
    if channel is None:
        return
    # A failed one is being retried (its dead letter replayed): that attempt counts too.
    rows.exclude(status=State.SENT).update(
        status=State.RETRYING,
        attempts=F("attempts") + 1,
        last_error=failures.user_message(channel, exc),
    )


def record_failed(
    notification_id: uuid.UUID, *, kind: str, error: str, context: CommandContext
) -> None:
    """Record that the notification will not be delivered (it was dead-lettered); a failed
    one failed again on its retry, whose events rolled back with the attempt: record both.

    ``error`` (the exception's detail) goes into the ``notification.failed`` event, for
    operators; the user keeps the message of the attempt that failed last.
    """
    with transaction.atomic():
        notification = repository.load(notification_id)
        if notification.status == SENT:
            return  # sent is final
        notification.retry()
        notification.failed(kind=kind, error=error)
        repository.save(notification, context)
        unknown = Value(failures.fallback(notification.channel))
        NotificationState.objects.filter(notification_id=notification_id).update(
            status=State.FAILED,
            last_error=Case(
                When(last_error="", then=unknown),
                default=F("last_error"),
                output_field=TextField(),
            ),
        )


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
