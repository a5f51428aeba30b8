"""The reminders API: schedule, list, snooze and cancel the reminders of one's own todos.

POST/GET /api/v1/todos/{id}/reminders/, POST /api/v1/reminders/{id}/snooze/ and
DELETE /api/v1/reminders/{id}/, against the real PostgreSQL event store, with the session's
worker running the handler that cancels a finished todo's reminders.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.eventstore.models import Event
from apps.reminders.models import ReminderState
from apps.reminders.services import MAX_PENDING_PER_TODO, fire_due_reminders
from tests.support.api import Api
from tests.support.threads import run_in_threads
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]


def later(**delta: float) -> str:
    """Return an aware ISO time ``delta`` from now (an hour by default)."""
    return (timezone.now() + timedelta(**(delta or {"hours": 1}))).isoformat()


def reminders_path(todo_id: str) -> str:
    return f"todos/{todo_id}/reminders/"


def schedule(api: Api, todo_id: str, **body: Any) -> dict[str, Any]:
    """Schedule a reminder in an hour (unless ``body`` says otherwise) and return it."""
    response = api.post(reminders_path(todo_id), {"remind_at": later(), **body})
    assert response.status_code == 201, response.json()
    return response.json()


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is ``status`` in the API's error shape with ``code``; return it."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def pending_of(todo_id: str) -> int:
    return ReminderState.objects.filter(todo_id=todo_id, status="pending").count()


def reminder_events(reminder_id: str) -> list[str]:
    rows = Event.objects.filter(stream_id=reminder_id).order_by("version")
    return [row.type for row in rows]


# -- scheduling ----------------------------------------------------------------------------


def test_scheduling_a_reminder_returns_it_pending_with_the_email_channel_by_default(
    alice: Api,
) -> None:
    todo = alice.create()
    remind_at = timezone.now() + timedelta(hours=2)

    response = alice.post(reminders_path(todo["id"]), {"remind_at": remind_at.isoformat()})

    assert response.status_code == 201, response.json()
    body = response.json()
    reminder_id = uuid.UUID(body["id"])
    assert body["todo_id"] == todo["id"]
    assert body["status"] == "pending"
    assert body["channels"] == ["email"]
    assert parse(body["remind_at"]) == remind_at
    assert (body["version"], body["triggered_at"], body["cancel_reason"]) == (1, None, "")
    assert reminder_events(str(reminder_id)) == ["reminder.scheduled"]
    state = ReminderState.objects.get(reminder_id=reminder_id)
    assert (state.status, state.owner_id, state.remind_at) == ("pending", alice.user.pk, remind_at)
    listed = alice.get(reminders_path(todo["id"]))
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()] == [body["id"]]


@pytest.mark.parametrize(
    ("channels", "kept"),
    [(["webhook", "email"], ["webhook", "email"]), (["email", "email"], ["email"])],
)
def test_scheduling_keeps_the_channels_asked_for_once_each(
    alice: Api, channels: list[str], kept: list[str]
) -> None:
    todo = alice.create()

    body = schedule(alice, todo["id"], channels=channels)

    assert body["channels"] == kept
    assert ReminderState.objects.get(reminder_id=body["id"]).channels == kept


def test_a_remind_at_in_the_past_is_refused_as_a_rule_violation(alice: Api) -> None:
    todo = alice.create()

    response = alice.post(reminders_path(todo["id"]), {"remind_at": later(minutes=-1)})

    assert_error(response, 409, "rule_violated")
    assert not ReminderState.objects.filter(todo_id=todo["id"]).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"remind_at": "2030-01-01T09:00:00"}, "remind_at", id="naive-remind-at"),
        pytest.param({"remind_at": "tomorrow"}, "remind_at", id="not-a-time"),
        pytest.param({}, "remind_at", id="no-remind-at"),
        pytest.param({"channels": ["sms"]}, "channels", id="unknown-channel"),
        pytest.param({"channels": []}, "channels", id="no-channel"),
        pytest.param({"colour": "red"}, "colour", id="unknown-field"),
        pytest.param({"minutes": 5}, "minutes", id="snooze-field-on-schedule"),
    ],
)
def test_an_invalid_schedule_is_a_400_naming_the_field_and_stores_nothing(
    alice: Api, body: dict[str, Any], field: str
) -> None:
    todo = alice.create()
    payload = {"remind_at": "2030-01-01T09:00:00Z", **body} if body else {}

    response = alice.post(reminders_path(todo["id"]), payload)

    error = assert_error(response, 400, "invalid")
    assert field in error["fields"], error
    assert not ReminderState.objects.filter(todo_id=todo["id"]).exists()
    assert not Event.objects.filter(type="reminder.scheduled").exists()


@pytest.mark.parametrize("finish", ["complete", "delete"])
def test_no_reminder_can_be_scheduled_on_a_completed_or_deleted_todo(
    alice: Api, finish: str
) -> None:
    todo = alice.create()
    if finish == "complete":
        assert alice.post(f"todos/{todo['id']}/complete/").status_code == 200
    else:
        assert alice.delete(f"todos/{todo['id']}/").status_code == 200

    response = alice.post(reminders_path(todo["id"]), {"remind_at": later()})

    assert_error(response, 409, "rule_violated")
    assert not ReminderState.objects.filter(todo_id=todo["id"]).exists()


def test_a_todo_has_at_most_ten_pending_reminders_and_cancelling_one_frees_a_place(
    alice: Api,
) -> None:
    todo = alice.create()
    reminders = [schedule(alice, todo["id"], remind_at=later(minutes=10 + i)) for i in range(10)]

    eleventh = alice.post(reminders_path(todo["id"]), {"remind_at": later(hours=3)})

    assert_error(eleventh, 409, "rule_violated")
    assert pending_of(todo["id"]) == MAX_PENDING_PER_TODO == 10
    assert alice.delete(f"reminders/{reminders[0]['id']}/").status_code == 200
    replacement = alice.post(reminders_path(todo["id"]), {"remind_at": later(hours=3)})
    assert replacement.status_code == 201, replacement.json()
    assert pending_of(todo["id"]) == 10
    assert_error(
        alice.post(reminders_path(todo["id"]), {"remind_at": later()}), 409, "rule_violated"
    )


def test_concurrent_schedules_beyond_the_limit_never_make_more_than_ten_pending(
    alice: Api,
) -> None:
    todo = alice.create()
    for i in range(5):
        schedule(alice, todo["id"], remind_at=later(minutes=10 + i))
    token = alice.token
    racers = 10
    start = threading.Barrier(racers, timeout=30)

    def send(minutes: int) -> Any:
        client = APIClient()
        client.raise_request_exception = False
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        start.wait()
        return client.post(
            f"/api/v1/{reminders_path(todo['id'])}",
            {"remind_at": later(minutes=minutes)},
            format="json",
        )

    futures = run_in_threads(send, [(60 + i,) for i in range(racers)])
    responses = [future.result() for future in futures]

    assert Counter(r.status_code for r in responses) == {201: 5, 409: 5}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {
        "rule_violated"
    }
    assert pending_of(todo["id"]) == 10
    assert Event.objects.filter(type="reminder.scheduled", data__todo_id=todo["id"]).count() == 10


# -- snooze and cancel ---------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [1, 90, 10_080])
def test_snoozing_a_future_reminder_puts_it_off_by_the_minutes(alice: Api, minutes: int) -> None:
    todo = alice.create()
    reminder = schedule(alice, todo["id"], remind_at=later(days=30))

    response = alice.post(f"reminders/{reminder['id']}/snooze/", {"minutes": minutes})

    assert response.status_code == 200, response.json()
    body = response.json()
    moved = parse(body["remind_at"])
    assert moved == parse(reminder["remind_at"]) + timedelta(minutes=minutes)  # never earlier
    assert (body["status"], body["version"]) == ("pending", 2)
    state = ReminderState.objects.get(reminder_id=reminder["id"])
    assert (state.remind_at, state.status, state.version) == (moved, "pending", 2)
    assert reminder_events(reminder["id"]) == ["reminder.scheduled", "reminder.snoozed"]


def test_snoozing_a_fired_reminder_moves_it_to_now_plus_the_minutes(alice: Api) -> None:
    todo = alice.create()
    reminder = schedule(alice, todo["id"], remind_at=later(seconds=1))
    wait_until(lambda: fire_due_reminders() and _status(reminder["id"]) == "triggered")
    before = timezone.now()

    response = alice.post(f"reminders/{reminder['id']}/snooze/", {"minutes": 30})

    after = timezone.now()
    assert response.status_code == 200, response.json()
    moved = parse(response.json()["remind_at"])
    assert before + timedelta(minutes=30) <= moved <= after + timedelta(minutes=30)
    assert response.json()["status"] == "pending"


def _status(reminder_id: str) -> str:
    return ReminderState.objects.get(reminder_id=reminder_id).status


@pytest.mark.parametrize("minutes", [0, 10_081, -5, "soon", None])
def test_snoozing_by_minutes_outside_one_to_10080_is_a_400(alice: Api, minutes: Any) -> None:
    todo = alice.create()
    reminder = schedule(alice, todo["id"])

    response = alice.post(f"reminders/{reminder['id']}/snooze/", {"minutes": minutes})

    error = assert_error(response, 400, "invalid")
    assert "minutes" in error["fields"]
    state = ReminderState.objects.get(reminder_id=reminder["id"])
    assert (state.remind_at, state.version) == (parse(reminder["remind_at"]), 1)


def test_a_cancelled_reminder_cant_be_snoozed(alice: Api) -> None:
    todo = alice.create()
    reminder = schedule(alice, todo["id"])
    assert alice.delete(f"reminders/{reminder['id']}/").status_code == 200

    response = alice.post(f"reminders/{reminder['id']}/snooze/", {"minutes": 5})

    assert_error(response, 409, "rule_violated")
    state = ReminderState.objects.get(reminder_id=reminder["id"])
    assert (state.status, state.remind_at) == ("cancelled", parse(reminder["remind_at"]))
    assert reminder_events(reminder["id"]) == ["reminder.scheduled", "reminder.cancelled"]


def test_cancelling_a_reminder_twice_is_refused_the_second_time(alice: Api) -> None:
    todo = alice.create()
    reminder = schedule(alice, todo["id"])

    first = alice.delete(f"reminders/{reminder['id']}/")
    second = alice.delete(f"reminders/{reminder['id']}/")

    assert first.status_code == 200, first.json()
    assert (first.json()["status"], first.json()["cancel_reason"]) == (
        "cancelled",
        "cancelled by its owner",
    )
    assert_error(second, 409, "rule_violated")
    assert reminder_events(reminder["id"]) == ["reminder.scheduled", "reminder.cancelled"]


# -- isolation -----------------------------------------------------------------------------


def test_bob_cant_see_schedule_snooze_or_cancel_alices_reminders(alice: Api, bob: Api) -> None:
    todo = alice.create()
    reminder = schedule(alice, todo["id"])
    before = ReminderState.objects.get(reminder_id=reminder["id"])

    attempts = {
        "list": bob.get(reminders_path(todo["id"])),
        "schedule": bob.post(reminders_path(todo["id"]), {"remind_at": later()}),
        "snooze": bob.post(f"reminders/{reminder['id']}/snooze/", {"minutes": 5}),
        "cancel": bob.delete(f"reminders/{reminder['id']}/"),
    }

    for name, response in attempts.items():
        assert response.status_code == 404, (name, response.status_code, response.content)
        assert response.json()["error"]["code"] == "not_found", name
    after = ReminderState.objects.get(reminder_id=reminder["id"])
    assert (after.status, after.remind_at, after.version) == (
        before.status,
        before.remind_at,
        before.version,
    )
    assert ReminderState.objects.filter(todo_id=todo["id"]).count() == 1
    assert reminder_events(reminder["id"]) == ["reminder.scheduled"]
    assert alice.get(reminders_path(todo["id"])).json() == [reminder]


# -- a finished todo needs no reminding ----------------------------------------------------


@pytest.mark.parametrize(
    ("finish", "event_type", "reason"),
    [
        ("complete", "todo.completed", "todo completed"),
        ("delete", "todo.deleted", "todo deleted"),
    ],
)
def test_completing_or_deleting_a_todo_cancels_its_pending_reminders(
    alice: Api, finish: str, event_type: str, reason: str
) -> None:
    todo = alice.create()
    pending = [schedule(alice, todo["id"], remind_at=later(minutes=m)) for m in (30, 60)]
    by_owner = schedule(alice, todo["id"], remind_at=later(minutes=90))
    assert alice.delete(f"reminders/{by_owner['id']}/").status_code == 200
    other_todo = alice.create(title="Unrelated")
    untouched = schedule(alice, other_todo["id"])

    if finish == "complete":
        assert alice.post(f"todos/{todo['id']}/complete/").status_code == 200
    else:
        assert alice.delete(f"todos/{todo['id']}/").status_code == 200

    # Deleting: the reminders' own handler; completing: the todo-completion saga's step.
    cause = Event.objects.get(stream_id=todo["id"], type=event_type)
    wait_until(
        lambda: (
            not ReminderState.objects.filter(
                reminder_id__in=[r["id"] for r in pending], status="pending"
            ).exists()
        ),
        message="the todo's pending reminders to be cancelled",
    )
    for reminder in pending:
        state = ReminderState.objects.get(reminder_id=reminder["id"])
        assert (state.status, state.cancel_reason) == ("cancelled", reason)
        cancelled = Event.objects.get(stream_id=reminder["id"], type="reminder.cancelled")
        assert cancelled.data["reason"] == reason
        assert cancelled.metadata["correlation_id"] == cause.metadata["correlation_id"]
    owner_cancelled = ReminderState.objects.get(reminder_id=by_owner["id"])
    assert owner_cancelled.cancel_reason == "cancelled by its owner"
    assert reminder_events(by_owner["id"]) == ["reminder.scheduled", "reminder.cancelled"]
    assert ReminderState.objects.get(reminder_id=untouched["id"]).status == "pending"
    listed = {r["id"]: r for r in alice.get(reminders_path(todo["id"])).json()}
    assert {listed[r["id"]]["cancel_reason"] for r in pending} == {reason}
