"""Restoring reminders a completed todo cancelled: the completion saga's undo of its first step.

``cancel_pending_of_todo`` returns the ids it cancelled; ``restore_reminders`` puts exactly
those back as they were, once, however often it runs. The services are called directly.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.eventstore.models import Event
from apps.eventstore.store import CommandContext
from apps.reminders import services
from apps.reminders.models import ReminderState
from apps.reminders.rebuild import rebuild_states
from apps.todos.services import create_todo
from tests.support.api import Api

CONTEXT = CommandContext(actor_id="system")
COLUMNS = ("remind_at", "channels", "status", "triggered_at", "cancel_reason")


def schedule(owner: int, todo_id: uuid.UUID, hours: float, channels: list[str]) -> uuid.UUID:
    at = timezone.now() + timedelta(hours=hours)
    return services.schedule_reminder(
        owner_id=owner, todo_id=todo_id, remind_at=at, channels=channels, context=CONTEXT
    ).reminder_id


def state(reminder_id: uuid.UUID) -> dict[str, Any]:
    return ReminderState.objects.filter(pk=reminder_id).values(*COLUMNS).get()


def types(reminder_id: uuid.UUID) -> list[str]:
    return list(
        Event.objects.filter(stream_id=reminder_id)
        .order_by("version")
        .values_list("type", flat=True)
    )


@pytest.fixture
def todo(alice: Api) -> uuid.UUID:
    return create_todo(owner_id=alice.user.pk, context=CONTEXT, title="Call mum").id


@pytest.mark.django_db
def test_cancelling_a_todos_reminders_returns_the_ids_it_cancelled(
    alice: Api, todo: uuid.UUID
) -> None:
    first = schedule(alice.user.pk, todo, 1, ["email"])
    second = schedule(alice.user.pk, todo, 2, ["webhook"])
    by_owner = schedule(alice.user.pk, todo, 3, ["email"])
    services.cancel_reminder(owner_id=alice.user.pk, reminder_id=by_owner, context=CONTEXT)

    cancelled = services.cancel_pending_of_todo(
        todo_id=todo, reason="todo completed", context=CONTEXT
    )

    assert sorted(cancelled) == sorted([first, second])
    assert services.cancel_pending_of_todo(todo_id=todo, reason="again", context=CONTEXT) == []


@pytest.mark.django_db
def test_restoring_puts_the_cancelled_reminders_back_as_they_were(
    alice: Api, todo: uuid.UUID
) -> None:
    ids = [
        schedule(alice.user.pk, todo, 1, ["email"]),
        schedule(alice.user.pk, todo, 2, ["email", "webhook"]),
    ]
    before = {reminder_id: state(reminder_id) for reminder_id in ids}
    cancelled = services.cancel_pending_of_todo(
        todo_id=todo, reason="todo completed", context=CONTEXT
    )
    assert {state(reminder_id)["status"] for reminder_id in ids} == {"cancelled"}

    restored = services.restore_reminders(reminder_ids=cancelled, context=CONTEXT)

    assert sorted(restored) == sorted(ids)
    assert {reminder_id: state(reminder_id) for reminder_id in ids} == before
    assert types(ids[0]) == ["reminder.scheduled", "reminder.cancelled", "reminder.restored"]


@pytest.mark.django_db
def test_restoring_twice_restores_once(alice: Api, todo: uuid.UUID) -> None:
    reminder = schedule(alice.user.pk, todo, 1, ["email"])
    cancelled = services.cancel_pending_of_todo(
        todo_id=todo, reason="todo completed", context=CONTEXT
    )
    services.restore_reminders(reminder_ids=cancelled, context=CONTEXT)

    again = services.restore_reminders(reminder_ids=cancelled, context=CONTEXT)

    assert again == []
    assert types(reminder) == ["reminder.scheduled", "reminder.cancelled", "reminder.restored"]
    assert state(reminder)["status"] == "pending"


@pytest.mark.django_db
def test_only_cancelled_reminders_are_restored(
    alice: Api, todo: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending = schedule(alice.user.pk, todo, 3, ["email"])
    fired = schedule(alice.user.pk, todo, 1, ["email"])
    real_now = timezone.now
    with monkeypatch.context() as clock:  # the clock is the edge: past the first one's time
        clock.setattr(timezone, "now", lambda: real_now() + timedelta(hours=2))
        assert services.fire_due_reminders() == 1
    unknown = uuid.uuid4()

    restored = services.restore_reminders(reminder_ids=[pending, fired, unknown], context=CONTEXT)

    assert restored == []
    assert (state(pending)["status"], state(fired)["status"]) == ("pending", "triggered")
    assert types(fired) == ["reminder.scheduled", "reminder.triggered"]


@pytest.mark.django_db
def test_a_restored_reminder_fires_at_its_time(
    alice: Api, todo: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    reminder = schedule(alice.user.pk, todo, 1, ["email"])
    cancelled = services.cancel_pending_of_todo(
        todo_id=todo, reason="todo completed", context=CONTEXT
    )
    services.restore_reminders(reminder_ids=cancelled, context=CONTEXT)

    real_now = timezone.now
    with monkeypatch.context() as clock:
        clock.setattr(timezone, "now", lambda: real_now() + timedelta(hours=2))
        assert services.fire_due_reminders() == 1

    assert state(reminder)["status"] == "triggered"


@pytest.mark.django_db
def test_a_rebuild_after_a_restore_gives_the_same_rows(alice: Api, todo: uuid.UUID) -> None:
    kept = schedule(alice.user.pk, todo, 1, ["email"])
    schedule(alice.user.pk, todo, 2, ["webhook"])
    cancelled = services.cancel_pending_of_todo(
        todo_id=todo, reason="todo completed", context=CONTEXT
    )
    services.restore_reminders(reminder_ids=[kept], context=CONTEXT)
    assert kept in cancelled
    before = {row["reminder_id"]: row for row in ReminderState.objects.values()}

    unchanged = rebuild_states()
    ReminderState.objects.all().delete()
    report = rebuild_states()

    assert (unchanged.updated, unchanged.inserted) == (0, 0)
    assert report.inserted == 2
    after = {row["reminder_id"]: row for row in ReminderState.objects.values()}
    assert after.keys() == before.keys()
    for key, row in before.items():
        assert {c: after[key][c] for c in COLUMNS} == {c: row[c] for c in COLUMNS}
    assert after[kept]["status"] == "pending"
