"""The todo-completion saga, driven through the API: completing a todo cancels its
reminders, creates its next occurrence and tells its owner; when the next occurrence
can't be created, the reminders come back exactly and the todo is reopened, with why.

Deliveries run in-process (``inline_worker``); the orchestrator's promises under a real
worker (retries, kills, timeouts, duplicates) are proven with a scripted saga in
``test_orchestrator_worker.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from apps.eventstore.models import Event
from apps.notifications.models import NotificationState
from apps.reminders.models import ReminderState
from apps.resilience.models import DeadLetter
from apps.sagas.completion import NAME
from apps.sagas.models import SagaInstance, SagaStep
from apps.todos import recurrence
from tests.reminders.test_reminders_api import later, schedule
from tests.support.api import Api
from tests.support.waiting import wait_until
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

FINAL = (
    SagaInstance.State.COMPLETED,
    SagaInstance.State.COMPENSATED,
    SagaInstance.State.FAILED,
)


def complete(api: Api, todo_id: str) -> tuple[Event, SagaInstance]:
    """Complete the todo through the API; return its todo.completed and its finished saga."""
    assert api.post(f"todos/{todo_id}/complete/").status_code == 200
    completed = Event.objects.filter(stream_id=todo_id, type="todo.completed").latest("position")
    saga = wait_until(
        lambda: SagaInstance.objects.filter(
            type=NAME, trigger_event_id=completed.event_id, state__in=FINAL
        ).first(),
        message="the completion saga to finish",
    )
    return completed, saga


def reminder_rows(ids: list[str]) -> list[tuple[Any, ...]]:
    rows = ReminderState.objects.filter(reminder_id__in=ids).order_by("remind_at")
    return list(rows.values_list("reminder_id", "status", "remind_at", "channels"))


def test_completing_a_todo_cancels_its_reminders_creates_the_next_and_tells_the_owner(
    alice: Api,
) -> None:
    assert alice.patch("me/", {"completion_channels": ["email"]}).status_code == 200
    todo = alice.create(title="Water plants", due_at="2030-01-07T09:00:00Z", recurrence="daily")
    reminders = [schedule(alice, todo["id"], remind_at=later(minutes=m))["id"] for m in (30, 60)]

    completed, saga = complete(alice, todo["id"])

    assert saga.state == "completed", saga.last_error
    assert {row[1] for row in reminder_rows(reminders)} == {"cancelled"}
    [following] = Event.objects.filter(type="todo.created", data__series_id=todo["id"])
    assert projected(following.stream_id, 1).status == "open"
    [notice] = NotificationState.objects.filter(source_event_id=completed.event_id)
    assert (notice.owner_id, notice.channel) == (alice.user.pk, "email")
    assert [row.type for row in Event.objects.filter(stream_id=saga.id).order_by("position")] == [
        "saga.started",
        "saga.todo-completion.cancel-reminders",
        "saga.step_completed",
        "saga.todo-completion.next-occurrence",
        "saga.step_completed",
        "saga.todo-completion.notify",
        "saga.step_completed",
        "saga.completed",
    ]
    # Everything the completion set off shares the completing request's correlation id.
    correlation = completed.metadata["correlation_id"]
    assert str(saga.correlation_id) == correlation
    assert following.metadata["correlation_id"] == correlation
    assert set(saga.context["cancelled_reminders"]) == set(reminders)


def test_without_completion_channels_nobody_is_told_and_the_saga_completes(alice: Api) -> None:
    todo = alice.create(title="Once")

    completed, saga = complete(alice, todo["id"])

    assert saga.state == "completed", saga.last_error
    assert not NotificationState.objects.filter(source_event_id=completed.event_id).exists()
    assert saga.context["next_occurrence"] is None


def test_when_the_next_occurrence_fails_for_good_the_reminders_come_back_and_the_todo_reopens(
    alice: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    todo = alice.create(title="Water plants", due_at="2030-01-07T09:00:00Z", recurrence="daily")
    reminders = [schedule(alice, todo["id"], remind_at=later(minutes=m))["id"] for m in (30, 60)]
    before = reminder_rows(reminders)

    def no_date(*args: Any, **kwargs: Any) -> None:
        raise ValueError("the rule can no longer produce a date")

    monkeypatch.setattr(recurrence, "next_after", no_date)  # in-process: the runs see it

    _, saga = complete(alice, todo["id"])

    assert saga.state == "compensated", saga.last_error
    assert reminder_rows(reminders) == before  # exactly the reminders it had, as they were
    assert not Event.objects.filter(type="todo.created", data__series_id=todo["id"]).exists()
    reopened = Event.objects.filter(stream_id=todo["id"]).latest("position")
    assert reopened.type == "todo.reopened"
    assert "the rule can no longer produce a date" in reopened.data["reason"]
    assert (
        alice.get(f"todos/{todo['id']}/events/").json()[-1]["data"]["reason"]
        == (reopened.data["reason"])
    )
    assert projected(todo["id"], reopened.version).status == "open"
    letter = DeadLetter.objects.get(handler="saga.todo-completion.next-occurrence")
    assert letter.kind == "business_rule"
    undone = SagaStep.objects.filter(saga=saga, phase="compensation", status="completed")
    assert list(undone.values_list("step", flat=True)) == ["cancel-reminders", "complete"]


def test_a_todos_related_history_shows_its_completion_saga_and_what_it_set_off(
    alice: Api, bob: Api
) -> None:
    todo = alice.create(title="Call mum")
    reminder = schedule(alice, todo["id"], remind_at=later(minutes=30))["id"]
    _, saga = complete(alice, todo["id"])

    own = alice.get(f"todos/{todo['id']}/events/").json()
    related = alice.get(f"todos/{todo['id']}/events/", related="true").json()

    assert [e["type"] for e in own] == ["todo.created", "todo.completed"]
    assert {e["stream_id"] for e in own} == {todo["id"]}
    positions = [e["position"] for e in related]
    assert positions == sorted(positions)
    by_stream = {(e["stream_type"], e["stream_id"]) for e in related}
    assert ("saga", str(saga.id)) in by_stream
    # Its cancellation shares the completion's correlation; its scheduling was a request
    # of its own, so it isn't in the todo's related history.
    assert ("reminder", reminder) in by_stream
    assert "reminder.scheduled" not in {e["type"] for e in related}
    assert {e["type"] for e in related} >= {
        "todo.created",
        "todo.completed",
        "reminder.cancelled",
        "saga.started",
        "saga.completed",
    }
    assert alice.get(f"todos/{todo['id']}/events/", related="maybe").status_code == 400
    assert bob.get(f"todos/{todo['id']}/events/", related="true").status_code == 404
