"""The todo services a completion saga calls: each has the effect of one run, however many.

``next_occurrence_id`` names the todo ``create_next_occurrence`` creates; ``delete_occurrence``
undoes it; ``reopen_after_failure`` reopens the completed todo with a reason in its history
(``todo.reopened`` v2; a v1 payload, stored without one, reads as reason None).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from apps.eventstore.exceptions import ConcurrencyConflict
from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent, decode
from apps.eventstore.store import CommandContext, read_stream, to_recorded
from apps.resilience.taxonomy import BusinessRuleViolation
from apps.todos import services
from apps.todos.events import TodoReopened
from apps.todos.rules import TodoStatus
from tests.support.api import Api

pytestmark = pytest.mark.django_db

USER = CommandContext(actor_id="test")
SYSTEM = CommandContext(actor_id="system")
DUE = datetime.fromisoformat("2030-01-07T09:00:00+00:00")


def completed(owner: int, **values: Any) -> RecordedEvent:
    """Create and complete a todo of ``owner``; return its ``todo.completed`` as recorded."""
    todo = services.create_todo(owner_id=owner, context=USER, title="Water plants", **values)
    services.complete_todo(owner_id=owner, todo_id=todo.id, context=USER)
    return to_recorded(Event.objects.get(stream_id=todo.id, type="todo.completed"))


def types(todo_id: uuid.UUID) -> list[str]:
    return [e.type for e in read_stream(todo_id)]


# -- next_occurrence_id -------------------------------------------------------------------


def test_the_next_occurrence_id_is_the_id_create_next_occurrence_creates(alice: Api) -> None:
    event = completed(alice.user.pk, due_at=DUE, recurrence="daily")

    before = services.next_occurrence_id(completed=event)
    created = services.create_next_occurrence(completed=event)

    assert created is not None
    assert before == created.id
    assert services.next_occurrence_id(completed=event) == created.id
    assert services.create_next_occurrence(completed=event) is None  # exactly once


def test_a_todo_that_does_not_recur_has_no_next_occurrence_id(alice: Api) -> None:
    assert services.next_occurrence_id(completed=completed(alice.user.pk)) is None


def test_a_created_occurrence_keeps_its_id_after_the_todo_stops_recurring(alice: Api) -> None:
    event = completed(alice.user.pk, due_at=DUE, recurrence="daily")
    created = services.create_next_occurrence(completed=event)
    assert created is not None
    services.delete_todo(owner_id=alice.user.pk, todo_id=event.stream_id, context=USER)

    assert services.next_occurrence_id(completed=event) == created.id


# -- delete_occurrence --------------------------------------------------------------------


def test_deleting_an_occurrence_twice_deletes_it_once(alice: Api) -> None:
    event = completed(alice.user.pk, due_at=DUE, recurrence="daily")
    occurrence = services.create_next_occurrence(completed=event)
    assert occurrence is not None

    deleted = services.delete_occurrence(todo_id=occurrence.id, context=SYSTEM)
    again = services.delete_occurrence(todo_id=occurrence.id, context=SYSTEM)

    assert deleted is not None
    assert deleted.status == TodoStatus.DELETED
    assert again is None
    assert types(occurrence.id) == ["todo.created", "todo.deleted"]
    actor = Event.objects.get(stream_id=occurrence.id, type="todo.deleted").metadata["actor_id"]
    assert actor == "system"


def test_deleting_an_occurrence_that_was_never_created_does_nothing(alice: Api) -> None:
    assert services.delete_occurrence(todo_id=uuid.uuid4(), context=SYSTEM) is None


def test_a_todo_of_no_series_is_not_deleted_as_an_occurrence(alice: Api) -> None:
    todo = services.create_todo(owner_id=alice.user.pk, context=USER, title="Pay rent")

    with pytest.raises(BusinessRuleViolation):
        services.delete_occurrence(todo_id=todo.id, context=SYSTEM)

    assert types(todo.id) == ["todo.created"]


# -- reopen_after_failure -----------------------------------------------------------------


def test_a_completed_todo_is_reopened_with_the_reason_in_its_history(alice: Api) -> None:
    event = completed(alice.user.pk)

    reopened = services.reopen_after_failure(
        todo_id=event.stream_id, reason="the next occurrence could not be created", context=SYSTEM
    )

    assert reopened is not None
    assert (reopened.status, reopened.completed_at) == (TodoStatus.OPEN, None)
    last = read_stream(event.stream_id)[-1]
    assert (last.type, last.schema_version) == ("todo.reopened", 2)
    assert last.payload == TodoReopened(reason="the next occurrence could not be created")
    assert last.metadata.actor_id == "system"
    history = alice.get(f"todos/{event.stream_id}/events/").json()
    assert history[-1]["data"] == {"reason": "the next occurrence could not be created"}


def test_reopening_after_failure_twice_reopens_once(alice: Api) -> None:
    event = completed(alice.user.pk)
    services.reopen_after_failure(todo_id=event.stream_id, reason="failed", context=SYSTEM)

    again = services.reopen_after_failure(todo_id=event.stream_id, reason="failed", context=SYSTEM)

    assert again is None
    assert types(event.stream_id) == ["todo.created", "todo.completed", "todo.reopened"]


def test_a_deleted_todo_is_not_reopened_after_failure(alice: Api) -> None:
    event = completed(alice.user.pk)
    services.delete_todo(owner_id=alice.user.pk, todo_id=event.stream_id, context=USER)

    assert (
        services.reopen_after_failure(todo_id=event.stream_id, reason="x", context=SYSTEM) is None
    )
    assert types(event.stream_id)[-1] == "todo.deleted"


def test_reopening_after_failure_retries_a_conflict(
    alice: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = completed(alice.user.pk)
    save = services.repository.save
    calls: list[int] = []

    def conflict_once(todo: Any, context: CommandContext) -> Any:
        calls.append(todo.version)
        if len(calls) == 1:
            raise ConcurrencyConflict(todo.id, todo.loaded_version, todo.loaded_version + 1)
        return save(todo, context)

    monkeypatch.setattr(services.repository, "save", conflict_once)

    reopened = services.reopen_after_failure(todo_id=event.stream_id, reason="x", context=SYSTEM)

    assert reopened is not None
    assert len(calls) == 2
    assert types(event.stream_id)[-1] == "todo.reopened"


def test_the_owners_reopen_records_no_reason(alice: Api) -> None:
    event = completed(alice.user.pk)

    response = alice.post(f"todos/{event.stream_id}/reopen/")

    assert response.status_code == 200
    assert read_stream(event.stream_id)[-1].payload == TodoReopened(reason=None)


# -- todo.reopened v1 ---------------------------------------------------------------------


@pytest.mark.parametrize("stored", [{}, "{}"], ids=["object", "json-text"])
def test_a_v1_reopened_payload_reads_as_one_with_no_reason(stored: Any) -> None:
    assert decode("todo.reopened", 1, stored) == TodoReopened(reason=None)


def test_a_todo_with_a_stored_v1_reopen_loads_open(alice: Api) -> None:
    event = completed(alice.user.pk)
    Event.objects.create(  # as the release before v2 left it
        event_id=uuid.uuid4(),
        stream_type="todo",
        stream_id=event.stream_id,
        version=3,
        type="todo.reopened",
        schema_version=1,
        data={},
        metadata={
            "event_id": str(uuid.uuid4()),
            "occurred_at": "2026-01-01T00:00:00+00:00",
            "correlation_id": str(uuid.uuid4()),
        },
    )

    todo = services.repository.load(event.stream_id)

    assert (todo.status, todo.version) == (TodoStatus.OPEN, 3)
    assert read_stream(event.stream_id)[-1].payload == TodoReopened(reason=None)
