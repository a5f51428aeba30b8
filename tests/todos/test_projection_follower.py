"""The todos projection's follower: batches from the checkpoint, coalesced nudges, events a
batch can't apply handed to the per-event path, a projection left behind nudged by the sweep.
"""

from __future__ import annotations

import uuid

import kombu.exceptions
import psycopg
import pytest
from celery import current_app
from django.core.cache import cache
from django.db import connection
from django.db.models import Sum

from apps.eventstore import following, projections, relay, store
from apps.eventstore.models import Event, OutboxMessage
from apps.eventstore.store import CommandContext
from apps.eventstore.tasks import sweep_outbox
from apps.resilience.models import DeadLetter, Delivery
from apps.todos import services
from apps.todos.events import TodoCompleted, TodoUpdated
from apps.todos.models import TodoStats, TodoView
from tests.support.waiting import wait_until
from tests.todos.conftest import projected

HANDLER = "todos.projection"


def _checkpoint() -> int:
    return projections.checkpoint("todos")


def _todo_positions() -> list[int]:
    types = projections.projection("todos").event_types
    return list(
        Event.objects.filter(type__in=types).order_by("position").values_list("position", flat=True)
    )


def _create(owner_id: int, count: int) -> list[uuid.UUID]:
    context = CommandContext(actor_id=str(owner_id))
    return [
        services.create_todo(owner_id=owner_id, context=context, title=f"todo {n}").id
        for n in range(count)
    ]


@pytest.mark.django_db
def test_a_follower_applies_the_log_past_its_checkpoint_in_batches(
    django_user_model, settings
) -> None:
    settings.PROJECTION_BATCH_SIZE = 2
    owner = django_user_model.objects.create_user("follower")
    ids = _create(owner.pk, 4)
    services.complete_todo(
        owner_id=owner.pk, todo_id=ids[0], context=CommandContext(actor_id=str(owner.pk))
    )

    assert following.follow("todos") == 5  # three batches: 2, 2 and 1

    rows = {view.todo_id: view for view in TodoView.objects.filter(todo_id__in=ids)}
    assert {todo_id: rows[todo_id].version for todo_id in ids} == {
        ids[0]: 2,
        **{todo_id: 1 for todo_id in ids[1:]},
    }
    assert rows[ids[0]].status == "completed"
    stats = TodoStats.objects.filter(owner_id=owner.pk).aggregate(
        total=Sum("total"), completed=Sum("completed"), open=Sum("open")
    )
    assert stats == {"total": 4, "completed": 1, "open": 3}
    assert _checkpoint() == _todo_positions()[-1]
    assert not Delivery.objects.filter(handler=HANDLER).exists()  # no task per event
    assert following.follow("todos") == 0


@pytest.mark.django_db
def test_a_batch_skips_what_the_per_event_path_applied_first(django_user_model) -> None:
    owner = django_user_model.objects.create_user("raced")
    first, second = _create(owner.pk, 2)
    event = store.read_stream(first)[0]
    projections.projection("todos").apply_live(event)  # a handed-on delivery got there first

    assert following.follow("todos") == 2

    assert TodoView.objects.filter(todo_id__in=[first, second]).count() == 2
    assert TodoStats.objects.get(owner_id=owner.pk).total == 2  # counted once


def _stored_as_a_newer_release(stream_id: uuid.UUID, version: int, data: dict) -> uuid.UUID:
    """Write a todo event of a schema version this release doesn't know; return its id."""
    event_id = uuid.uuid4()
    Event.objects.create(
        event_id=event_id,
        stream_type="todo",
        stream_id=stream_id,
        version=version,
        type="todo.created",
        schema_version=99,
        data=data,
        metadata={
            "event_id": str(event_id),
            "occurred_at": "2026-12-01T00:00:00+00:00",
            "correlation_id": str(uuid.uuid4()),
        },
    )
    return event_id


@pytest.mark.django_db
def test_an_event_that_cannot_be_decoded_is_handed_on_and_the_rest_applied(
    django_user_model, caplog
) -> None:
    """A newer release's event (a rolling deploy) stops neither the batch nor the ones
    after: it goes to the per-event path, which defers it for a worker that knows it."""
    owner = django_user_model.objects.create_user("newer")
    before = _create(owner.pk, 1)
    newer = uuid.uuid4()
    newer_id = _stored_as_a_newer_release(newer, 1, {"owner_id": owner.pk, "title": "v99"})
    after = _create(owner.pk, 1)

    assert following.follow("todos") == 3

    assert TodoView.objects.filter(todo_id__in=before + after).count() == 2
    assert list(Delivery.objects.filter(handler=HANDLER).values_list("event_id", "status")) == [
        (newer_id, "queued")
    ]
    assert _checkpoint() == _todo_positions()[-1]
    assert "can't all be decoded" in caplog.text

    # A later event of that todo is early: refused by the batch, handed on after it.
    caplog.clear()
    store.append(
        stream_type="todo",
        stream_id=newer,
        expected_version=1,
        events=[TodoCompleted(completed_at="2026-12-02T00:00:00Z")],
        context=CommandContext(actor_id=str(owner.pk)),
    )
    assert following.follow("todos") == 1
    assert Delivery.objects.filter(handler=HANDLER).count() == 2
    assert "one at a time" not in caplog.text  # refused as early, not a failed batch


@pytest.mark.django_db
def test_a_second_follower_leaves_the_running_one_a_note_and_returns(django_user_model) -> None:
    owner = django_user_model.objects.create_user("second")
    ids = _create(owner.pk, 2)
    cache.delete("projection-again:todos")
    with _raw() as holder:  # a running follower, as far as the lock goes
        holder.execute(
            "SELECT pg_advisory_lock(%s, hashtext('todos'))", [following.FOLLOWER_LOCK_CLASS]
        )
        assert following.follow("todos") == 0  # did not wait for the holder
        assert cache.get("projection-again:todos") == 1
    assert not TodoView.objects.filter(todo_id__in=ids).exists()

    assert following.follow("todos") == 2  # the holder's turn: the note makes it look again

    assert cache.get("projection-again:todos") is None
    assert TodoView.objects.filter(todo_id__in=ids).count() == 2


def _raw() -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    )


@pytest.mark.usefixtures("worker")
def test_nudges_are_coalesced_until_a_follower_has_caught_up(transactional_db, settings) -> None:
    settings.PROJECTION_NUDGE_TTL_SECONDS = 600  # only a follower clears the flag in time
    cache.delete("projection-nudge:todos")

    assert following.nudge("todos") is True
    assert following.nudge("todos") is False  # one message waits already
    wait_until(
        lambda: cache.get("projection-nudge:todos") is None,
        timeout=30,
        message="a follower to catch up and clear the flag",
    )
    assert following.nudge("todos") is True
    wait_until(
        lambda: cache.get("projection-nudge:todos") is None,
        timeout=30,
        message="the second follower to clear the flag",
    )


@pytest.mark.django_db(transaction=True)
def test_a_todos_relay_takes_no_producer_when_its_follower_is_already_nudged(
    django_user_model, settings, monkeypatch
) -> None:
    # Only the followed projection subscribes to a todo's events: with a nudge already
    # waiting, its relay has nothing to send and takes no producer from the pool.
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    owner = django_user_model.objects.create_user("no-producer")
    [todo_id] = _create(owner.pk, 1)

    def no_broker(*args, **kwargs):
        raise kombu.exceptions.OperationalError("the pool is not to be used")

    monkeypatch.setattr(current_app, "producer_or_acquire", no_broker)
    rows = OutboxMessage.objects.filter(event__stream_id=todo_id)
    cache.set("projection-nudge:todos", 1, 600)
    try:
        assert relay.publish_pending(ids=rows.values_list("id", flat=True)) == 1
    finally:
        cache.delete("projection-nudge:todos")  # or later tests' nudges are coalesced away
    assert rows.get().published_at is not None
    assert rows.get().last_error == ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_an_event_a_batch_cannot_apply_goes_to_the_per_event_path_with_its_stream(
    django_user_model,
) -> None:
    """A todo stream that starts with an update (no creation) fails its batch; the follower
    applies the rest of the batch, and hands that stream's events to the runtime, which
    dead-letters the first and parks the second behind it."""
    owner = django_user_model.objects.create_user("poisoned")
    context = CommandContext(actor_id=str(owner.pk))
    before = _create(owner.pk, 1)
    broken = uuid.uuid4()
    events = store.append(
        stream_type="todo",
        stream_id=broken,
        expected_version=0,
        events=[
            TodoUpdated(changes={"title": "no creation"}),
            TodoCompleted(completed_at="2026-12-01T00:00:00Z"),
        ],
        context=context,
    )
    after = _create(owner.pk, 1)

    projected(after[0], 1, timeout=60)
    projected(before[0], 1)
    letter = wait_until(
        lambda: DeadLetter.objects.filter(handler=HANDLER, event_id=events[0].event_id).first(),
        timeout=60,
        message="the stream's first event dead-lettered",
    )
    wait_until(
        lambda: Delivery.objects.filter(
            handler=HANDLER, event_id=events[1].event_id, status="parked"
        ).exists(),
        timeout=60,
        message="the stream's second event parked behind it",
    )
    assert letter.stream_id == broken
    assert not TodoView.objects.filter(todo_id=broken).exists()
    assert _checkpoint() >= events[1].position
    handed = set(Delivery.objects.filter(handler=HANDLER).values_list("event_id", flat=True))
    assert handed == {event.event_id for event in events}  # the healthy todos: no delivery


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_the_outbox_sweep_nudges_a_projection_left_behind(django_user_model, settings) -> None:
    """No nudge came (the relay never ran, as if its message was lost): the sweep sees the
    checkpoint behind the log and sends a follower."""
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    cache.delete("projection-nudge:todos")  # any earlier nudge's flag has expired
    owner = django_user_model.objects.create_user("forgotten")
    todo_id = _create(owner.pk, 1)[0]
    assert following.nudge_lagging() == ["todos"]

    projected(todo_id, 1, timeout=60)
    wait_until(lambda: following.nudge_lagging() == [], timeout=30, message="no lag left")
    sweep_outbox()  # publishes the rows left behind: nothing for the projection to do twice
    assert TodoStats.objects.get(owner_id=owner.pk).total == 1
