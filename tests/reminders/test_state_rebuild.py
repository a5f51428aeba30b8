"""ReminderState is rebuilt from the log: whatever happened to its rows, a rebuild makes them
what the services wrote, because the services write what the log says.

A history is built through the services (schedule, snooze, cancel, fire, snooze after
firing, cancel with a completed todo), the table is damaged, and ``rebuild_state`` is run.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.eventstore.store import CommandContext
from apps.reminders import services
from apps.reminders.models import ReminderState
from apps.reminders.rebuild import LOG_COLUMNS, rebuild_states
from apps.todos.services import complete_todo, create_todo
from tests.support.api import Api

pytestmark = pytest.mark.django_db

CONTEXT = CommandContext(actor_id="test")


def rows() -> dict[uuid.UUID, dict[str, Any]]:
    """Return every ReminderState row as a dict of its columns, by id."""
    return {row["reminder_id"]: row for row in ReminderState.objects.values()}


def without(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in columns}


@pytest.fixture
def history(alice: Api, monkeypatch: pytest.MonkeyPatch) -> dict[str, uuid.UUID]:
    """Build a history of five reminders of Alice's through the services; return their ids."""
    owner = alice.user.pk
    todo = create_todo(owner_id=owner, context=CONTEXT, title="Call mum").id
    other = create_todo(owner_id=owner, context=CONTEXT, title="Pay rent").id

    def schedule(todo_id: uuid.UUID, hours: float, channels: list[str]) -> uuid.UUID:
        at = timezone.now() + timedelta(hours=hours)
        state = services.schedule_reminder(
            owner_id=owner, todo_id=todo_id, remind_at=at, channels=channels, context=CONTEXT
        )
        return state.reminder_id

    ids = {
        "snoozed": schedule(todo, 1, ["email"]),
        "cancelled": schedule(todo, 2, ["webhook"]),
        "fired": schedule(todo, 1, ["email", "webhook"]),
        "refired": schedule(todo, 1, ["email"]),
        "with_todo": schedule(other, 3, ["email"]),
    }
    services.snooze_reminder(
        owner_id=owner, reminder_id=ids["snoozed"], minutes=30, context=CONTEXT
    )
    services.cancel_reminder(owner_id=owner, reminder_id=ids["cancelled"], context=CONTEXT)
    real_now = timezone.now
    with monkeypatch.context() as clock:  # the clock is the edge: an hour and five later
        clock.setattr(timezone, "now", lambda: real_now() + timedelta(hours=1, minutes=5))
        assert services.fire_due_reminders() == 2  # "fired" and "refired"; not "snoozed"
    services.snooze_reminder(
        owner_id=owner, reminder_id=ids["refired"], minutes=10, context=CONTEXT
    )
    complete_todo(owner_id=owner, todo_id=other, context=CONTEXT)
    services.cancel_pending_of_todo(todo_id=other, reason="todo completed", context=CONTEXT)
    return ids


def test_the_history_covers_every_status_and_column(history: dict[str, uuid.UUID]) -> None:
    states = {name: ReminderState.objects.get(pk=pk) for name, pk in history.items()}

    assert {name: state.status for name, state in states.items()} == {
        "snoozed": "pending",
        "cancelled": "cancelled",
        "fired": "triggered",
        "refired": "pending",
        "with_todo": "cancelled",
    }
    assert states["refired"].triggered_at is not None  # kept through the snooze
    assert states["with_todo"].cancel_reason == "todo completed"


def test_rebuilding_a_correct_table_changes_nothing(history: dict[str, uuid.UUID]) -> None:
    before = rows()

    report = rebuild_states()

    assert (report.streams, report.inserted, report.updated, report.deleted) == (5, 0, 0, 0)
    assert rows() == before


def test_deleted_rows_come_back_from_the_log(history: dict[str, uuid.UUID]) -> None:
    before = rows()
    ReminderState.objects.all().delete()

    report = rebuild_states(batch=2)  # several batches

    after = rows()
    assert report.inserted == 5
    assert after.keys() == before.keys()
    for key, original in before.items():
        rebuilt = after[key]
        assert without(rebuilt, "created_at", "updated_at") == without(
            original, "created_at", "updated_at"
        )
        # The first event's time: a moment before the inline insert, in its transaction.
        assert timedelta(0) <= original["created_at"] - rebuilt["created_at"] < timedelta(1)


def test_corrupted_rows_are_repaired_to_what_the_services_wrote(
    history: dict[str, uuid.UUID],
) -> None:
    before = rows()
    ReminderState.objects.filter(pk=history["snoozed"]).update(
        remind_at=timezone.now() - timedelta(days=1), version=1
    )
    ReminderState.objects.filter(pk=history["cancelled"]).update(status="pending")
    ReminderState.objects.filter(pk=history["fired"]).update(
        triggered_at=None, channels=["webhook"], owner_id=0
    )
    ReminderState.objects.filter(pk=history["with_todo"]).update(
        cancel_reason="", todo_id=uuid.uuid4()
    )

    report = rebuild_states()

    after = rows()
    assert report.updated == 4
    assert {key: without(row, "updated_at") for key, row in after.items()} == {
        key: without(row, "updated_at") for key, row in before.items()
    }
    assert after[history["refired"]] == before[history["refired"]]  # untouched


def test_a_row_of_no_reminder_stream_is_deleted(history: dict[str, uuid.UUID]) -> None:
    before = rows()
    ReminderState.objects.create(
        reminder_id=uuid.uuid4(),
        todo_id=uuid.uuid4(),
        owner_id=1,
        remind_at=timezone.now(),
        status="pending",
        version=1,
    )

    assert rebuild_states().deleted == 1
    assert rows() == before


def test_the_log_columns_are_every_column_but_the_rows_own() -> None:
    columns = {field.name for field in ReminderState._meta.fields}

    assert columns - set(LOG_COLUMNS) == {"reminder_id", "created_at", "updated_at"}


def test_the_command_rebuilds_the_reminders_state(
    history: dict[str, uuid.UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    before = rows()
    ReminderState.objects.filter(pk=history["fired"]).delete()

    call_command("rebuild_state", "reminders", "--no-progress")

    assert "5 streams: 1 inserted, 0 repaired, 0 deleted" in capsys.readouterr().out
    assert without(rows()[history["fired"]], "created_at", "updated_at") == without(
        before[history["fired"]], "created_at", "updated_at"
    )
