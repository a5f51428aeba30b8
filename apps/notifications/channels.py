"""Sending one notification on one channel, through the channel's circuit breaker."""

from __future__ import annotations

import json
from typing import Any

import httpx
from django.conf import settings
from django.core.mail import EmailMessage

from apps.notifications import webhooks
from apps.notifications.aggregates import Notification
from apps.resilience.breakers import CircuitBreaker
from apps.resilience.taxonomy import InvalidInput


class NoTarget(InvalidInput):
    """The user has no address on this channel (no email address, no webhook URL)."""


class Redirected(InvalidInput):
    """The webhook answered a redirect, which is not followed (it could lead anywhere)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"the webhook answered a redirect ({status_code}); not followed")
        self.status_code = status_code


def send_email(notification: Notification, address: str) -> str:
    """Send the notification to ``address`` through Django's email backend; return it."""
    if not address:
        raise NoTarget("the user has no email address")
    todo = notification.body.get("todo", {})
    completed = notification.source_type == "todo.completed"
    message = EmailMessage(
        subject=f"{'Completed' if completed else 'Reminder'}: {todo.get('title', 'a todo')}",
        body=_completion_text(todo) if completed else _email_text(notification.body),
        to=[address],
        headers={
            "Idempotency-Key": str(notification.id),
            "X-Backstop-Event": notification.source_type,
        },
    )
    with CircuitBreaker("email").guard():
        message.send(fail_silently=False)
    return address


def _email_text(body: dict[str, Any]) -> str:
    todo, reminder = body.get("todo", {}), body.get("reminder", {})
    due = f"\nDue: {todo['due_at']}" if todo.get("due_at") else ""
    return f"{todo.get('title', '')}{due}\n\nReminder set for {reminder.get('remind_at', '')}.\n"


def _completion_text(todo: dict[str, Any]) -> str:
    return f"{todo.get('title', '')}\n\nCompleted at {todo.get('completed_at', '')}.\n"


def send_webhook(notification: Notification, url: str, secret: str) -> str:
    """POST the notification as signed JSON; a non-2xx answer raises (classified by status).

    The URL is checked again at delivery time (DNS may have changed since it was set), and
    the request goes only to an address that check approved.
    """
    target = webhooks.check_url(url)
    body = json.dumps(
        {
            "event_type": notification.source_type,
            "event_id": str(notification.source_event_id),
            "occurred_at": notification.occurred_at.isoformat()
            if notification.occurred_at
            else None,
            **notification.body,
        },
        separators=(",", ":"),
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": str(notification.id),
        "X-Backstop-Event": notification.source_type,
        "X-Backstop-Signature": webhooks.sign(body, secret),
    }
    timeout = httpx.Timeout(settings.WEBHOOK_READ_TIMEOUT, connect=settings.WEBHOOK_CONNECT_TIMEOUT)
    with CircuitBreaker(f"webhook:{target.host}").guard():
        response = webhooks.post(target, content=body, headers=headers, timeout=timeout)
        if response.is_redirect:
            raise Redirected(response.status_code)
        response.raise_for_status()
    return url
