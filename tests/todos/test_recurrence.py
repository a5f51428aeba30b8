"""Recurring todos: completing one creates the next of its series, exactly once.

The next occurrence is created by the todo-completion saga's ``next-occurrence`` step
(``apps.sagas.completion``), started by the ``todo.completed`` event, on the real
PostgreSQL event store and Redis broker.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from celery import current_app
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from apps.eventstore.models import Event
from apps.eventstore.store import CommandContext, load_event
from apps.resilience.models import Delivery
from apps.sagas.models import SagaInstance
from apps.todos import services
from tests.support.api import Api
from tests.support.waiting import wait_until
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

HANDLER = "saga.todo-completion.next-occurrence"


def series_created(series_id: str) -> list[Event]:
    """The todo.created events of the later occurrences of a series, in log order."""
    return list(Event.objects.filter(type="todo.created", data__series_id=series_id))


def completions(todo_id: str) -> list[Event]:
    return list(Event.objects.filter(stream_id=todo_id, type="todo.completed").order_by("version"))


def step_message(completed: Event) -> Event:
    """Return the completion saga's message asking for the next occurrence of ``completed``."""
    saga = wait_until(
        lambda: SagaInstance.objects.filter(trigger_event_id=completed.event_id).first(),
        message=f"the completion saga of {completed.event_id}",
    )
    return wait_until(
        lambda: Event.objects.filter(stream_id=saga.id, type=HANDLER).first(),
        message=f"saga {saga.id} to ask for the next occurrence",
    )


def handled(completed: Event, runs: int = 1, timeout: float = 20) -> Delivery:
    """Wait until the next-occurrence step has finished ``runs`` deliveries for the
    completion ``completed``."""
    message = step_message(completed)
    return wait_until(
        lambda: Delivery.objects.filter(
            handler=HANDLER,
            event_id=message.event_id,
            status="succeeded",
            starts__gte=runs,
            finishes__gte=runs,
        ).first(),
        timeout=timeout,
        message=f"{HANDLER} to finish {runs} deliveries for {completed.event_id}",
    )


def next_of(series_id: str, count: int = 1) -> Event:
    """Wait for the series' ``count``-th later occurrence and return its todo.created."""
    created = wait_until(
        lambda: series_created(series_id)[count - 1 : count],
        message=f"occurrence {count + 1} of series {series_id}",
    )
    return created[0]


def complete(api: Api, todo_id: str) -> Event:
    """Complete the todo through the API and return its (latest) todo.completed event."""
    response = api.post(f"todos/{todo_id}/complete/")
    assert response.status_code == 200, response.json()
    return completions(todo_id)[-1]


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("daily", "FREQ=DAILY"),
        ("weekly", "FREQ=WEEKLY"),
        ("monthly", "FREQ=MONTHLY"),
        ("FREQ=WEEKLY;BYDAY=MO,WE", "FREQ=WEEKLY;BYDAY=MO,WE"),
        ("RRULE:freq=daily;interval=2", "FREQ=DAILY;INTERVAL=2"),
    ],
)
def test_a_recurring_todo_is_created_with_its_rule_normalised(
    alice: Api, given: str, normalised: str
) -> None:
    response = alice.post(
        "todos/", {"title": "Water plants", "due_at": "2030-01-07T09:00:00Z", "recurrence": given}
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["recurrence"], body["series_id"]) == (normalised, None)
    created = Event.objects.get(stream_id=body["id"], type="todo.created")
    assert created.data["recurrence"] == normalised
    assert projected(body["id"], 1).recurrence == normalised
    assert alice.get(f"todos/{body['id']}/").json()["recurrence"] == normalised


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=SOMETIMES",
        "nonsense",
        "DTSTART:20300101T090000Z\nRRULE:FREQ=DAILY",
        "DTSTART=20300101T090000Z;FREQ=DAILY",
        "",
    ],
)
def test_an_invalid_recurrence_rule_is_a_400_naming_recurrence(alice: Api, rule: str) -> None:
    response = alice.post(
        "todos/", {"title": "Water plants", "due_at": "2030-01-07T09:00:00Z", "recurrence": rule}
    )

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["recurrence"]
    assert not Event.objects.filter(type="todo.created", data__owner_id=alice.user.pk).exists()


# -- the next occurrence -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "due_at", "next_due", "then_due"),
    [
        # 2030-01-07 is a Monday.
        (
            "daily",
            "2030-01-07T09:00:00+00:00",
            "2030-01-08T09:00:00+00:00",
            "2030-01-09T09:00:00+00:00",
        ),
        (
            "weekly",
            "2030-01-07T09:00:00+00:00",
            "2030-01-14T09:00:00+00:00",
            "2030-01-21T09:00:00+00:00",
        ),
        (
            "monthly",
            "2030-01-07T09:00:00+00:00",
            "2030-02-07T09:00:00+00:00",
            "2030-03-07T09:00:00+00:00",
        ),
        (
            "FREQ=WEEKLY;BYDAY=MO,WE",
            "2030-01-07T09:00:00+00:00",
            "2030-01-09T09:00:00+00:00",
            "2030-01-14T09:00:00+00:00",
        ),
    ],
)
def test_completing_a_recurring_todo_creates_the_next_occurrence_of_its_series(
    alice: Api, rule: str, due_at: str, next_due: str, then_due: str
) -> None:
    first = alice.create(
        title="Water plants",
        description="the ones on the balcony",
        tags=["Home", "garden"],
        priority="high",
        due_at=due_at,
        recurrence=rule,
    )

    completed = complete(alice, first["id"])

    created = next_of(first["id"])
    second_id = str(created.stream_id)
    assert second_id != first["id"]
    assert created.data["title"] == "Water plants"
    assert created.data["description"] == "the ones on the balcony"
    assert created.data["tags"] == ["home", "garden"]
    assert created.data["priority"] == "high"
    assert created.data["recurrence"] == first["recurrence"]
    assert created.data["series_id"] == first["id"]
    assert created.data["owner_id"] == alice.user.pk
    assert parse(created.data["due_at"]) == parse(next_due)
    # Caused by the saga's step, in the completing command's correlation.
    assert created.metadata["correlation_id"] == completed.metadata["correlation_id"]
    view = projected(second_id, 1)
    assert (view.status, view.series_id, view.due_at) == (
        "open",
        uuid.UUID(first["id"]),
        parse(next_due),
    )
    projected(first["id"], 2)
    listed = {t["id"]: t for t in alice.get("todos/", page_size=200).json()["results"]}
    assert listed[second_id]["title"] == "Water plants"
    assert (listed[second_id]["series_id"], listed[second_id]["status"]) == (first["id"], "open")
    assert parse(listed[second_id]["due_at"]) == parse(next_due)
    assert listed[first["id"]]["status"] == "completed"

    complete(alice, second_id)

    third = next_of(first["id"], count=2)
    assert third.data["series_id"] == first["id"]  # the series keeps its first todo's id
    assert parse(third.data["due_at"]) == parse(then_due)


def test_the_next_occurrence_is_created_exactly_once_under_duplicate_delivery(alice: Api) -> None:
    first = alice.create(due_at="2030-01-07T09:00:00Z", recurrence="daily")
    completed = complete(alice, first["id"])
    next_of(first["id"])
    handled(completed)
    message = step_message(completed)
    fast_path = f"processed:{HANDLER}:{message.event_id}"
    assert cache.get(fast_path) is not None

    def redeliver(times: int) -> None:
        for _ in range(times):
            current_app.send_task(
                "backstop.deliver", args=(HANDLER, str(message.event_id)), queue="handlers"
            )

    redeliver(3)
    handled(completed, runs=4)
    cache.delete(fast_path)  # Redis forgot: the database mark must hold on its own
    redeliver(3)
    handled(completed, runs=7)
    again = services.create_next_occurrence(completed=load_event(completed.event_id))

    assert again is None
    assert len(series_created(first["id"])) == 1
    assert Event.objects.filter(type="todo.created", data__owner_id=alice.user.pk).count() == 2


@pytest.mark.parametrize(
    "due_at",
    [
        pytest.param("2030-01-07T09:00:00Z", id="with-due-date"),
        pytest.param(None, id="no-due-date"),
    ],
)
def test_reopening_and_completing_again_does_not_create_a_second_next_occurrence(
    alice: Api, due_at: str | None
) -> None:
    first = alice.create(due_at=due_at, recurrence="daily")
    completed_at = parse(complete(alice, first["id"]).data["completed_at"])
    next_of(first["id"])
    assert alice.post(f"todos/{first['id']}/reopen/").status_code == 200
    # Completed again later, as a person would (rules count whole seconds: a later second).
    wait_until(
        lambda: timezone.now().replace(microsecond=0) > completed_at.replace(microsecond=0),
        message="the clock to reach the next second",
    )

    again = complete(alice, first["id"])

    handled(again)
    assert len(completions(first["id"])) == 2
    assert len(series_created(first["id"])) == 1


def test_a_recurring_todo_deleted_before_its_completion_was_handled_spawns_nothing(
    alice: Api,
) -> None:
    first = alice.create(due_at="2030-01-07T09:00:00Z", recurrence="daily")
    context = CommandContext(actor_id=str(alice.user.pk))
    with transaction.atomic():  # completed, then deleted before any worker saw it
        services.complete_todo(owner_id=alice.user.pk, todo_id=first["id"], context=context)
        services.delete_todo(owner_id=alice.user.pk, todo_id=first["id"], context=context)

    handled(completions(first["id"])[0])

    assert series_created(first["id"]) == []
    refused = alice.post(f"todos/{first['id']}/complete/")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "rule_violated"


@pytest.mark.parametrize(
    "rule", ["FREQ=DAILY;COUNT=2", "FREQ=DAILY;UNTIL=20300108T090000Z"], ids=["count", "until"]
)
def test_completing_the_last_occurrence_of_a_bounded_rule_spawns_nothing_more(
    alice: Api, rule: str
) -> None:
    first = alice.create(due_at="2030-01-07T09:00:00Z", recurrence=rule)
    complete(alice, first["id"])
    second = next_of(first["id"])
    assert parse(second.data["due_at"]) == parse("2030-01-08T09:00:00Z")

    last = complete(alice, str(second.stream_id))

    handled(last)
    assert [str(e.stream_id) for e in series_created(first["id"])] == [str(second.stream_id)]


def test_a_next_occurrence_created_meanwhile_leaves_the_handlers_transaction_usable(
    alice: Api, monkeypatch
) -> None:
    """Two completions of one recurring todo race: the loser's save conflicts. The conflict
    is caught inside the handler's transaction, which must go on and commit."""
    first = alice.create(due_at="2030-01-07T09:00:00Z", recurrence="daily")
    completed = complete(alice, first["id"])
    next_of(first["id"])  # the worker created it
    monkeypatch.setattr(services.store, "stream_exists", lambda stream_id: False)  # raced

    with transaction.atomic():
        again = services.create_next_occurrence(completed=load_event(completed.event_id))
        still_usable = Event.objects.filter(stream_id=first["id"]).count()

    assert again is None
    assert still_usable == len(completions(first["id"])) + 1
    assert len(series_created(first["id"])) == 1
