"""A dry run shows what a dead letter's handler would do now, and leaves nothing behind:
no rows, no events, no processed mark, no broker message, no email, no webhook request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.eventstore.models import Event, OutboxMessage
from apps.eventstore.store import CommandContext, to_recorded
from apps.notifications import services as notifications
from apps.notifications.models import NotificationSettings, NotificationState
from apps.reminders import services as reminders
from apps.resilience.models import DeadLetter, ProcessedMessage
from apps.resilience.services.dry_run import dry_run
from apps.todos.services import create_todo
from tests.resilience.conftest import make_letter, request_job
from tests.resilience.handlers import effect_stream, script
from tests.support.http import controlled_server

pytestmark = pytest.mark.django_db
CONTEXT = CommandContext(actor_id="test")


def snapshot() -> tuple[int, int, int]:
    return Event.objects.count(), OutboxMessage.objects.count(), ProcessedMessage.objects.count()


def test_a_dry_run_reports_rows_and_events_and_keeps_none(
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    recorded = request_job("dry")
    letter = make_letter("test.scripted", recorded)
    before = snapshot()

    with django_capture_on_commit_callbacks() as callbacks:
        report = dry_run(letter.pk)

    assert report.succeeded, report.error
    assert report.writes["eventstore_event"]["inserted"] == 1
    assert report.writes["eventstore_outboxmessage"]["inserted"] == 1
    assert report.writes["resilience_processedmessage"]["inserted"] == 1
    assert [event["type"] for event in report.events] == ["test.effect.recorded"]
    assert report.events[0]["stream"].endswith(str(effect_stream("test.scripted", "dry")))
    assert snapshot() == before
    assert not Event.objects.filter(stream_id=effect_stream("test.scripted", "dry")).exists()
    assert callbacks == []  # the relay's on-commit publish was discarded with the rollback


def test_a_dry_run_uses_the_edited_payload() -> None:
    recorded = request_job("as-stored")
    letter = make_letter("test.scripted", recorded, edited_payload={"name": "as-edited"})

    report = dry_run(letter.pk)

    assert report.events[0]["stream"].endswith(str(effect_stream("test.scripted", "as-edited")))


def test_a_dry_run_of_a_failing_handler_reports_its_error_kind() -> None:
    recorded = request_job("still-broken")
    script("still-broken", "validation")
    letter = make_letter("test.scripted", recorded)
    before = snapshot()

    report = dry_run(letter.pk)

    assert not report.succeeded
    assert report.error_kind == "validation"
    assert "the payload is not acceptable" in report.error
    assert report.events == []
    assert snapshot() == before


def notification_letters(email: str, webhook_url: str, monkeypatch: Any) -> list[DeadLetter]:
    """Fire a reminder on email and webhook; dead-letter both deliveries; return the letters."""
    owner = get_user_model().objects.create_user("nina", email=email, password="pw-nina-1")
    NotificationSettings.objects.create(user=owner, webhook_url=webhook_url, webhook_secret="s3")
    todo = create_todo(owner_id=owner.pk, context=CONTEXT, title="Water the plants").id
    reminder = reminders.schedule_reminder(
        owner_id=owner.pk,
        todo_id=todo,
        remind_at=timezone.now() + timedelta(hours=1),
        channels=["email", "webhook"],
        context=CONTEXT,
    ).reminder_id
    real_now = timezone.now
    with monkeypatch.context() as clock:  # the clock is the edge: past the reminder's time
        clock.setattr(timezone, "now", lambda: real_now() + timedelta(hours=2))
        assert reminders.fire_due_reminders() == 1
    triggered = Event.objects.get(stream_id=reminder, type="reminder.triggered")
    ids = notifications.request_for_reminder(to_recorded(triggered))
    rows = Event.objects.filter(type="notification.requested", stream_id__in=ids)
    return [make_letter("notifications.deliver", to_recorded(row)) for row in rows]


def test_a_dry_run_of_notifications_lists_the_email_and_webhook_and_sends_nothing(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with controlled_server() as server:
        letters = notification_letters("nina@example.test", f"{server.url}/hook", monkeypatch)
        reports = [dry_run(letter.pk) for letter in letters]

        assert server.count() == 0
    assert all(report.succeeded for report in reports), [r.error for r in reports]
    calls = [call for report in reports for call in report.outbound]
    assert sorted(call["channel"] for call in calls) == ["email", "webhook"]
    [email] = [call for call in calls if call["channel"] == "email"]
    assert email["to"] == ["nina@example.test"]
    assert "Water the plants" in email["subject"]
    [hook] = [call for call in calls if call["channel"] == "webhook"]
    assert hook["url"] == f"{server.url}/hook"
    assert "Water the plants" in hook["body"]
    assert mail.outbox == []
    assert set(NotificationState.objects.values_list("status", flat=True)) == {"requested"}
    assert not ProcessedMessage.objects.exists()


def test_the_dry_run_button_shows_the_result_page(operator_client: Client) -> None:
    recorded = request_job("via-admin")
    letter = make_letter("test.scripted", recorded)
    detail = operator_client.get(reverse("admin:resilience_deadletter_change", args=[letter.pk]))
    assert b"dry-run-form" in detail.content

    page = operator_client.post(reverse("admin:resilience_deadletter_dry_run", args=[letter.pk]))

    assert page.status_code == 200
    assert b"The handler would succeed." in page.content
    assert b"test.effect.recorded" in page.content
    assert b"eventstore_event" in page.content
    assert not Event.objects.filter(stream_id=effect_stream("test.scripted", "via-admin")).exists()
