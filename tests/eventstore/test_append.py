"""Appending: what one call writes, on the one-round-trip SQL path and on the ORM path."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import DataError, IntegrityError, connection, transaction

from apps.eventstore import store
from apps.eventstore.exceptions import ConcurrencyConflict
from apps.eventstore.models import Event, OutboxMessage
from apps.eventstore.repository import retry_on_conflict
from apps.eventstore.store import CommandContext, StreamAppend
from tests.eventstore.counter import CounterOpened, Incremented
from tests.support.locks import someone_waits
from tests.support.threads import closing_connections
from tests.support.waiting import wait_until

PATHS = ["sql-function", "orm"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch) -> str:
    """Run a test through each way of appending (the ORM one is SQLite's, exercised here)."""
    if request.param == "orm":
        monkeypatch.setattr(store, "_append_in_postgres", store._append_with_orm)
    return request.param


def _append(stream_id: uuid.UUID, expected: int, *events, context=None) -> list:
    return store.append(
        stream_type="test.counter",
        stream_id=stream_id,
        expected_version=expected,
        events=list(events),
        context=context or CommandContext(actor_id="tester"),
    )


@pytest.mark.django_db
def test_recorded_events_match_the_stored_rows_and_outbox_in_order(path: str) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    _append(first, 0, CounterOpened(label="first"))
    context = CommandContext(actor_id="tester", request_id="req-1")

    recorded = store.append_many(
        [
            StreamAppend("test.counter", first, 1, [Incremented(by=1), Incremented(by=2)]),
            StreamAppend("test.counter", second, 0, [CounterOpened(label="second")]),
        ],
        context=context,
    )

    rows = list(Event.objects.filter(position__in=[r.position for r in recorded]))
    assert [(r.stream_id, r.version, r.type) for r in rows] == [
        (first, 2, "test.counter.incremented"),
        (first, 3, "test.counter.incremented"),
        (second, 1, "test.counter.opened"),
    ]
    assert [r.position for r in recorded] == [row.position for row in rows]
    assert [r.event_id for r in recorded] == [row.event_id for row in rows]
    assert [row.data for row in rows] == [{"by": 1}, {"by": 2}, {"label": "second"}]
    for row, event in zip(rows, recorded, strict=True):
        assert store.to_recorded(row) == event  # what a reader decodes is what was returned
        assert row.metadata["request_id"] == "req-1"
        assert row.metadata["correlation_id"] == str(context.correlation_id)
    outbox = list(OutboxMessage.objects.filter(event__in=rows).order_by("id"))
    assert [m.event_id for m in outbox] == [row.position for row in rows]
    assert all(m.published_at is None and m.attempts == 0 for m in outbox)


@pytest.mark.django_db
def test_many_events_of_one_append_get_distinct_random_ids(path: str) -> None:
    recorded = _append(uuid.uuid4(), 0, CounterOpened(label="many"), *[Incremented(by=1)] * 63)

    ids = [r.event_id for r in recorded]
    assert all(isinstance(i, uuid.UUID) and i.version == 4 for i in ids)
    assert all(i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == 64
    stored = Event.objects.filter(position__in=[r.position for r in recorded])
    assert sorted(stored.values_list("event_id", flat=True)) == sorted(ids)


@pytest.mark.django_db
def test_a_stale_stream_in_a_multi_stream_append_conflicts_and_writes_nothing(path: str) -> None:
    fresh, stale = uuid.uuid4(), uuid.uuid4()
    _append(stale, 0, CounterOpened(label="stale"), Incremented(by=1))
    before = Event.objects.count(), OutboxMessage.objects.count()

    with pytest.raises(ConcurrencyConflict) as raised, transaction.atomic():
        store.append_many(
            [
                StreamAppend("test.counter", fresh, 0, [CounterOpened(label="fresh")]),
                StreamAppend("test.counter", stale, 1, [Incremented(by=5)]),
            ],
            context=CommandContext(),
        )

    conflict = raised.value
    assert (conflict.stream_id, conflict.expected_version, conflict.actual_version) == (stale, 1, 2)
    assert (Event.objects.count(), OutboxMessage.objects.count()) == before


@pytest.mark.django_db(transaction=True)
def test_without_the_lock_the_unique_constraint_still_turns_a_race_into_a_conflict(
    path: str, monkeypatch
) -> None:
    """Two writers at the same version with no append lock: the version check passes for
    both, the second insert waits on the first's index entry and fails as a conflict."""
    monkeypatch.setattr(store, "APPEND_LOCK_KEY", None)
    stream_id = uuid.uuid4()
    _append(stream_id, 0, CounterOpened(label="raced"))
    first_inserted, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    @closing_connections
    def first() -> None:
        with transaction.atomic():
            _append(stream_id, 1, Incremented(by=1))
            first_inserted.set()
            release.wait(timeout=20)

    @closing_connections
    def second() -> None:
        first_inserted.wait(timeout=20)
        try:
            _append(stream_id, 1, Incremented(by=2))
            outcome["second"] = "saved"
        except ConcurrencyConflict as conflict:
            outcome["second"] = conflict

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_inserted.wait(timeout=20)
    wait_until(
        lambda: someone_waits("transactionid"), timeout=20, message="the second writer to wait"
    )
    release.set()
    for thread in threads:
        thread.join(timeout=20)

    conflict = outcome["second"]
    assert isinstance(conflict, ConcurrencyConflict), conflict
    assert conflict.stream_id == stream_id
    assert list(Event.objects.filter(stream_id=stream_id).values_list("version", "data")) == [
        (1, {"label": "raced"}),
        (2, {"by": 1}),
    ]


@pytest.mark.django_db
def test_a_database_error_other_than_a_conflict_is_not_disguised_as_one(path: str) -> None:
    too_long = "x" * 101  # stream_type is varchar(100)
    with pytest.raises(DataError, match=r"character varying\(100\)") as raised:
        store.append(
            stream_type=too_long,
            stream_id=uuid.uuid4(),
            expected_version=0,
            events=[CounterOpened(label="x")],
            context=CommandContext(),
        )
    assert not isinstance(raised.value, ConcurrencyConflict)


@pytest.mark.django_db
def test_another_integrity_error_is_raised_as_itself_not_as_a_conflict(
    path: str, monkeypatch
) -> None:
    reused, pending = uuid.uuid4(), store._pending

    def same_event_id(appends, context):  # every new event gets the same id
        found = pending(appends, context)
        for p in found:
            p.metadata = p.metadata.model_copy(update={"event_id": reused})
        return found

    monkeypatch.setattr(store, "_pending", same_event_id)
    _append(uuid.UUID(int=1), 0, CounterOpened(label="first"))

    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        _append(uuid.UUID(int=2), 0, CounterOpened(label="second"))

    assert not isinstance(raised.value, ConcurrencyConflict)
    assert raised.value.__cause__ is not raised.value  # the driver's error is kept as cause


@pytest.mark.django_db
def test_retry_on_conflict_converges_inside_a_callers_transaction() -> None:
    stream_id = uuid.uuid4()
    _append(stream_id, 0, CounterOpened(label="shared"))
    expected = iter([0, 1])  # the first attempt is stale: a conflict raised by the database

    def command() -> list:
        return _append(stream_id, next(expected), Incremented(by=1))

    with transaction.atomic():
        [recorded] = retry_on_conflict(command, attempts=2)
        in_the_same_transaction = Event.objects.filter(stream_id=stream_id).count()

    assert recorded.version == 2
    assert in_the_same_transaction == 2


@pytest.mark.django_db
def test_the_append_function_writes_every_column_the_tables_require() -> None:
    """A NOT NULL column without a default, added to the events or outbox table, must be
    added to eventstore_append too (SQLite's ORM path would not notice)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'eventstore_append'")
        [(source,)] = cursor.fetchall()
        for table in ("eventstore_event", "eventstore_outboxmessage"):
            cursor.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                " AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'",
                [table],
            )
            required = {name for (name,) in cursor.fetchall()}
            insert = source.split(f"INSERT INTO {table} (", 1)[1].split(")", 1)[0]
            columns = {c.strip() for c in insert.split(",")}
            assert required <= columns, (table, required - columns)
