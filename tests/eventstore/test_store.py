"""Appending, loading, upcasting and decoding events."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from apps.eventstore import store
from apps.eventstore.exceptions import EventDecodeError, StreamNotFound, UnknownEventType
from apps.eventstore.models import Event, OutboxMessage, Snapshot
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext
from tests.eventstore.counter import Counter, Incremented, Relabelled, SnapshottingCounter

pytestmark = pytest.mark.django_db


def _insert_raw(stream_id: uuid.UUID, version: int, type_: str, schema: int, data: dict) -> None:
    """Write a row as an older release (or a corrupted one) would have left it."""
    Event.objects.create(
        event_id=uuid.uuid4(),
        stream_type="test.counter",
        stream_id=stream_id,
        version=version,
        type=type_,
        schema_version=schema,
        data=data,
        metadata={
            "event_id": str(uuid.uuid4()),
            "occurred_at": "2026-01-01T00:00:00+00:00",
            "correlation_id": str(uuid.uuid4()),
        },
    )


def test_saved_aggregate_loads_back_with_the_same_state() -> None:
    repo = Repository(Counter)
    counter = Counter.open("apples")
    counter.increment(2)
    counter.increment(3)
    context = CommandContext(actor_id="alice", request_id="req-1")

    recorded = repo.save(counter, context)

    loaded = repo.load(counter.id)
    assert (loaded.label, loaded.total, loaded.version) == ("apples", 5, 3)
    assert [r.version for r in recorded] == [1, 2, 3]
    assert [r.type for r in recorded] == [
        "test.counter.opened",
        "test.counter.incremented",
        "test.counter.incremented",
    ]
    assert {r.metadata.actor_id for r in recorded} == {"alice"}
    assert {r.metadata.correlation_id for r in recorded} == {context.correlation_id}
    assert recorded[0].position < recorded[1].position < recorded[2].position


def test_each_event_gets_one_outbox_row_in_the_same_transaction() -> None:
    counter = Counter.open("pears")
    counter.increment()
    recorded = Repository(Counter).save(counter, CommandContext())

    rows = OutboxMessage.objects.filter(event__stream_id=counter.id)
    assert sorted(row.event_id for row in rows) == [r.position for r in recorded]


def test_a_failed_save_leaves_neither_events_nor_outbox_rows() -> None:
    counter = Counter.open("plums")

    def failing_command() -> None:
        with store.transaction.atomic():
            Repository(Counter).save(counter, CommandContext())
            raise RuntimeError("the command failed after saving")

    with pytest.raises(RuntimeError):
        failing_command()
    assert not Event.objects.filter(stream_id=counter.id).exists()
    assert not OutboxMessage.objects.filter(event__stream_id=counter.id).exists()


def test_caused_by_carries_correlation_and_causation() -> None:
    counter = Counter.open("figs")
    first = Repository(Counter).save(counter, CommandContext(request_id="r-9"))[0]

    follow_up = CommandContext(actor_id="system").caused_by(first)

    assert follow_up.correlation_id == first.metadata.correlation_id
    assert follow_up.causation_id == first.event_id
    assert follow_up.request_id == "r-9"


def test_loading_an_unknown_stream_is_stream_not_found() -> None:
    missing = uuid.uuid4()
    with pytest.raises(StreamNotFound, match=str(missing)):
        Repository(Counter).load(missing)


@pytest.fixture(params=["read_stream", "read_all"])
def read(request):
    """Read one stream's events the way a loader does (stored objects) or the way a
    subscriber or a rebuild does (``read_all``: the JSON text, parsed by pydantic)."""
    if request.param == "read_stream":
        return store.read_stream
    start = Event.objects.order_by("-position").values_list("position", flat=True).first() or 0

    def from_the_log(stream_id: uuid.UUID) -> list:
        return [e for e in store.read_all(after_position=start) if e.stream_id == stream_id]

    return from_the_log


def test_an_old_schema_version_is_upcast_on_read_and_the_row_is_unchanged(read) -> None:
    counter = Counter.open("old")
    Repository(Counter).save(counter, CommandContext())
    _insert_raw(counter.id, 2, "test.counter.relabelled", 1, {"name": "renamed"})

    events = read(counter.id)

    assert events[1].payload == Relabelled(label="renamed", reason="unknown")
    assert events[1].schema_version == 1
    assert Repository(Counter).load(counter.id).label == "renamed"
    assert Event.objects.get(stream_id=counter.id, version=2).data == {"name": "renamed"}


def test_an_unregistered_type_is_a_clear_error_naming_it(read) -> None:
    stream_id = uuid.uuid4()
    _insert_raw(stream_id, 1, "test.counter.exploded", 1, {})

    with pytest.raises(UnknownEventType, match=r"test\.counter\.exploded"):
        read(stream_id)


def test_a_payload_that_does_not_fit_its_class_is_a_decode_error(read) -> None:
    stream_id = uuid.uuid4()
    _insert_raw(stream_id, 1, "test.counter.incremented", 1, {"by": "lots"})

    with pytest.raises(EventDecodeError, match=r"test\.counter\.incremented"):
        read(stream_id)


def test_a_current_version_payload_read_as_text_keeps_every_value(read) -> None:
    counter = Counter.open('ünïcode "quoted" \\ label')
    Repository(Counter).save(counter, CommandContext(actor_id="7", request_id="r-1"))
    counter.increment(3)
    Repository(Counter).save(counter, CommandContext())

    events = read(counter.id)

    assert events == store.read_stream(counter.id)
    assert events[0].payload.label == 'ünïcode "quoted" \\ label'
    assert (events[0].metadata.actor_id, events[0].metadata.request_id) == ("7", "r-1")


def test_a_version_newer_than_the_registered_class_is_a_decode_error(read) -> None:
    stream_id = uuid.uuid4()
    _insert_raw(stream_id, 1, "test.counter.incremented", 7, {"by": 1})

    with pytest.raises(EventDecodeError, match="newer"):
        read(stream_id)


def test_a_rule_broken_records_nothing() -> None:
    counter = Counter.open("strict")
    with pytest.raises(ValueError, match="positive"):
        counter.increment(0)
    assert [type(e).__name__ for e in counter.pending_events()] == ["CounterOpened"]


def test_snapshots_are_taken_every_n_events_and_used_to_load() -> None:
    repo = Repository(SnapshottingCounter)
    counter = SnapshottingCounter.open("snap")
    counter.increment(1)
    repo.save(counter, CommandContext())  # version 2: no snapshot yet
    assert not Snapshot.objects.filter(stream_id=counter.id).exists()

    counter.increment(10)
    counter.increment(100)
    repo.save(counter, CommandContext())  # version 4: crossed 3

    snapshot = Snapshot.objects.get(stream_id=counter.id)
    assert (snapshot.version, snapshot.state) == (4, {"label": "snap", "total": 111})
    with connection.cursor() as cursor:  # prove the load starts from the snapshot
        cursor.execute(
            "UPDATE eventstore_snapshot SET state = %s WHERE stream_id = %s",
            ['{"label": "from-snapshot", "total": 111}', counter.id],
        )
    loaded = repo.load(counter.id)
    assert (loaded.label, loaded.total, loaded.version) == ("from-snapshot", 111, 4)


def test_read_all_returns_committed_events_in_position_order_after_a_checkpoint() -> None:
    repo = Repository(Counter)
    counters = [Counter.open(f"c{i}") for i in range(3)]
    for counter in counters:
        repo.save(counter, CommandContext())
    first_position = store.read_stream(counters[0].id)[0].position

    after = store.read_all(after_position=first_position, limit=10)

    assert [e.stream_id for e in after] == [counters[1].id, counters[2].id]
    assert store.read_all(after_position=first_position, limit=1)[0].stream_id == counters[1].id


def test_incrementing_event_payloads_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        Incremented(by=1).by = 2  # type: ignore[misc]
