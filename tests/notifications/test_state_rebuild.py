"""NotificationState is rebuilt from the log: its log columns come back exactly, and the
columns only the delivery handler writes (attempts, last_error, a retrying status, the
target before sending) are kept, or, on a row that was lost, the best the log allows.

A history is built through the services and handlers' own functions (reminders fire, a
notification is requested per channel, then sent, failed, retried), with no worker.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.eventstore.models import Event
from apps.eventstore.store import CommandContext, to_recorded
from apps.notifications import failures, services
from apps.notifications.models import NotificationSettings, NotificationState
from apps.notifications.rebuild import rebuild_states
from apps.reminders import services as reminders
from apps.todos.services import create_todo
from tests.support.api import Api

pytestmark = pytest.mark.django_db

CONTEXT = CommandContext(actor_id="test")
#: Columns only the delivery handler writes, with the row's own timestamps.
NOT_IN_LOG = ("attempts", "last_error", "created_at", "updated_at")


def rows() -> dict[uuid.UUID, dict[str, Any]]:
    """Return every NotificationState row as a dict of its columns, by id."""
    return {row["notification_id"]: row for row in NotificationState.objects.values()}


def without(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in columns}


def requested(owner: int, channels: list[str], monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """Fire a reminder of a new todo of ``owner`` on ``channels``; request its notifications."""
    todo = create_todo(owner_id=owner, context=CONTEXT, title="Call mum").id
    reminder = reminders.schedule_reminder(
        owner_id=owner,
        todo_id=todo,
        remind_at=timezone.now() + timedelta(hours=1),
        channels=channels,
        context=CONTEXT,
    ).reminder_id
    real_now = timezone.now
    with monkeypatch.context() as clock:  # the clock is the edge: past the reminder's time
        clock.setattr(timezone, "now", lambda: real_now() + timedelta(hours=2))
        assert reminders.fire_due_reminders() == 1
    triggered = Event.objects.get(stream_id=reminder, type="reminder.triggered")
    return services.request_for_reminder(to_recorded(triggered))


def attempt_failed(notification_id: uuid.UUID) -> None:
    services.record_attempt_failed(notification_id, httpx.ConnectError("connection refused"))


def dead_lettered(notification_id: uuid.UUID) -> None:
    error = "ConnectError: connection refused"
    services.record_failed(notification_id, kind="transient", error=error, context=CONTEXT)


@pytest.fixture
def history(alice: Api, monkeypatch: pytest.MonkeyPatch, settings: Any) -> dict[str, uuid.UUID]:
    """Build five notifications of Alice's, one in each state; return their ids by name."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    owner = alice.user.pk
    NotificationSettings.objects.create(
        user=alice.user, webhook_url="https://hooks.example.com/in?token=secret"
    )
    sent, failed = requested(owner, ["email", "webhook"], monkeypatch)
    [retrying] = requested(owner, ["webhook"], monkeypatch)
    [resent] = requested(owner, ["email"], monkeypatch)
    [waiting] = requested(owner, ["email"], monkeypatch)
    services.deliver(sent, CONTEXT)
    for _ in range(2):
        attempt_failed(failed)
    dead_lettered(failed)
    attempt_failed(retrying)
    attempt_failed(resent)
    dead_lettered(resent)
    services.deliver(resent, CONTEXT)  # its dead letter retried: requested again, then sent
    return {
        "sent": sent,
        "failed": failed,
        "retrying": retrying,
        "resent": resent,
        "waiting": waiting,
    }


def test_the_history_covers_every_status(history: dict[str, uuid.UUID]) -> None:
    states = {name: NotificationState.objects.get(pk=pk) for name, pk in history.items()}

    assert {name: (s.status, s.attempts) for name, s in states.items()} == {
        "sent": ("sent", 1),
        "failed": ("failed", 2),
        "retrying": ("retrying", 1),
        "resent": ("sent", 2),
        "waiting": ("requested", 0),
    }
    assert states["sent"].target == "a***@example.test"
    assert states["failed"].target == "hooks.example.com"
    assert states["failed"].last_error == failures.UNREACHABLE


def test_rebuilding_a_correct_table_changes_nothing(history: dict[str, uuid.UUID]) -> None:
    before = rows()

    report = rebuild_states()

    assert (report.streams, report.inserted, report.updated, report.deleted) == (5, 0, 0, 0)
    assert rows() == before


def test_corrupted_rows_are_repaired_and_the_handlers_columns_kept(
    history: dict[str, uuid.UUID],
) -> None:
    before = rows()
    NotificationState.objects.filter(pk=history["sent"]).update(
        status="requested", sent_at=None, target="elsewhere"
    )
    NotificationState.objects.filter(pk=history["failed"]).update(status="sent", owner_id=0)
    NotificationState.objects.filter(pk=history["retrying"]).update(channel="email")
    NotificationState.objects.filter(pk=history["resent"]).update(
        sent_at=timezone.now() - timedelta(days=3), source_type="todo.created"
    )
    NotificationState.objects.filter(pk=history["waiting"]).update(source_event_id=uuid.uuid4())

    report = rebuild_states()

    after = rows()
    assert report.updated == 5
    assert {key: without(row, "updated_at") for key, row in after.items()} == {
        key: without(row, "updated_at") for key, row in before.items()
    }


def test_deleted_rows_come_back_with_what_the_log_says(history: dict[str, uuid.UUID]) -> None:
    before = rows()
    NotificationState.objects.all().delete()

    report = rebuild_states(batch=3)  # several batches

    after = rows()
    assert report.inserted == 5
    for name in ("sent", "failed", "resent", "waiting"):  # retrying: see below
        key = history[name]
        assert without(after[key], *NOT_IN_LOG) == without(before[key], *NOT_IN_LOG), name
        assert timedelta(0) <= before[key]["created_at"] - after[key]["created_at"] < timedelta(1)
    # What the log can't say: attempts it doesn't prove, a failed attempt's own message,
    # and that a requested notification is being retried.
    attempts = {name: after[key]["attempts"] for name, key in history.items()}
    assert attempts == {"sent": 1, "failed": 1, "retrying": 0, "resent": 2, "waiting": 0}
    assert after[history["failed"]]["last_error"] == failures.WEBHOOK_FAILED
    assert after[history["retrying"]]["status"] == "requested"


def test_a_row_of_no_notification_stream_is_deleted(history: dict[str, uuid.UUID]) -> None:
    before = rows()
    NotificationState.objects.create(
        notification_id=uuid.uuid4(),
        owner_id=1,
        channel="email",
        status="sent",
        source_type="reminder.triggered",
        source_event_id=uuid.uuid4(),
    )

    assert rebuild_states().deleted == 1
    assert rows() == before


def test_the_command_rebuilds_the_notifications_state(
    history: dict[str, uuid.UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    NotificationState.objects.filter(pk=history["sent"]).update(status="failed")

    call_command("rebuild_state", "notifications")  # with its progress bar, on stderr

    out, err = capsys.readouterr()
    assert "5 streams: 0 inserted, 1 repaired, 0 deleted" in out
    assert "ev" in err
    assert NotificationState.objects.get(pk=history["sent"]).status == "sent"
