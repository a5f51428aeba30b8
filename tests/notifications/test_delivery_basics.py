"""A reminder fires and its owner hears of it: by webhook (signed, with a stable key) and email."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery import current_app
from django.core import mail
from django.utils import timezone

from apps.notifications.models import NotificationState
from apps.reminders.models import ReminderState
from tests.support.api import Api
from tests.support.http import ControlledServer, controlled_server
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]


@pytest.fixture
def receiver() -> Iterator[ControlledServer]:
    with controlled_server() as server:
        yield server


def _due_now(reminder_id: str) -> None:
    """Make a scheduled reminder due (the API refuses a time in the past)."""
    ReminderState.objects.filter(reminder_id=reminder_id).update(
        remind_at=timezone.now() - timedelta(seconds=1)
    )


def test_a_triggered_reminder_is_delivered_to_the_webhook_once_signed(
    alice: Api, receiver: ControlledServer
) -> None:
    me = alice.client.patch(
        "/api/v1/me/", {"webhook_url": receiver.url + "/hook"}, format="json"
    ).json()
    secret = me["webhook_secret"]
    todo = alice.create(title="Call mum")
    soon = (timezone.now() + timedelta(minutes=5)).isoformat()
    reminder = alice.post(
        f"todos/{todo['id']}/reminders/", {"remind_at": soon, "channels": ["webhook"]}
    ).json()
    _due_now(reminder["id"])

    current_app.send_task("backstop.reminders.fire_due", queue="maintenance")

    state = wait_until(
        lambda: NotificationState.objects.filter(status="sent").first(),
        message="the webhook delivery",
    )
    [received] = receiver.received
    body = json.loads(received.body)
    assert body["event_type"] == "reminder.triggered"
    assert body["todo"]["title"] == "Call mum"
    assert body["reminder"]["id"] == reminder["id"]
    assert received.headers["Idempotency-Key"] == str(state.notification_id)
    assert received.headers["X-Backstop-Event"] == "reminder.triggered"
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    assert received.headers["X-Backstop-Signature"] == expected
    assert ReminderState.objects.get(reminder_id=reminder["id"]).status == "triggered"
    listed = alice.get("notifications/").json()["results"]
    assert [(n["channel"], n["status"], n["attempts"]) for n in listed] == [("webhook", "sent", 1)]


def test_completing_a_todo_cancels_its_pending_reminders(alice: Api) -> None:
    todo = alice.create()
    soon = (timezone.now() + timedelta(hours=1)).isoformat()
    reminder = alice.post(f"todos/{todo['id']}/reminders/", {"remind_at": soon}).json()

    alice.post(f"todos/{todo['id']}/complete/")

    wait_until(
        lambda: ReminderState.objects.get(reminder_id=reminder["id"]).status == "cancelled",
        message="the reminder to be cancelled",
    )
    assert ReminderState.objects.get(reminder_id=reminder["id"]).cancel_reason == "todo completed"
    assert mail.outbox == []
