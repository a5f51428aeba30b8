"""Concurrent writers: optimistic concurrency, bounded retries, and a gap-free log."""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
from django.db import DatabaseError, connection, transaction

from apps.eventstore import store
from apps.eventstore.exceptions import ConcurrencyConflict
from apps.eventstore.models import Event
from apps.eventstore.repository import Repository, retry_on_conflict
from apps.eventstore.store import CommandContext
from tests.eventstore.counter import Counter, Incremented
from tests.support.locks import someone_waits
from tests.support.threads import closing_connections, run_in_threads
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
repo = Repository(Counter)


def _open_counter() -> uuid.UUID:
    counter = Counter.open("shared")
    repo.save(counter, CommandContext())
    return counter.id


def test_two_saves_at_the_same_version_one_wins_the_other_conflicts() -> None:
    stream_id = _open_counter()
    both_loaded = threading.Barrier(2, timeout=10)

    def increment() -> str:
        counter = repo.load(stream_id)
        both_loaded.wait()
        counter.increment()
        try:
            repo.save(counter, CommandContext())
        except ConcurrencyConflict as conflict:
            return f"conflict at {conflict.actual_version}, expected {conflict.expected_version}"
        return "saved"

    outcomes = [f.result() for f in run_in_threads(increment, [(), ()])]

    assert sorted(outcomes) == ["conflict at 2, expected 1", "saved"]
    assert Event.objects.filter(stream_id=stream_id).count() == 2


def test_retry_on_conflict_converges_with_many_writers_and_loses_no_update() -> None:
    stream_id = _open_counter()
    writers, increments_each = 8, 5
    start = threading.Barrier(writers, timeout=10)

    def command() -> None:
        counter = repo.load(stream_id)
        counter.increment()
        repo.save(counter, CommandContext())

    def writer() -> int:
        start.wait()
        done = 0
        for _ in range(increments_each):
            retry_on_conflict(command, attempts=100)
            done += 1
        return done

    succeeded = sum(f.result() for f in run_in_threads(writer, [()] * writers))

    counter = repo.load(stream_id)
    assert succeeded == writers * increments_each
    assert counter.version == 1 + succeeded
    assert counter.total == succeeded


def test_retry_on_conflict_gives_up_after_its_bound() -> None:
    calls = []

    def always_conflicts() -> None:
        calls.append(1)
        raise ConcurrencyConflict(uuid.uuid4(), 1, 2)

    with pytest.raises(ConcurrencyConflict):
        retry_on_conflict(always_conflicts, attempts=3)
    assert len(calls) == 3


def test_a_reader_following_the_log_never_misses_an_event_under_concurrent_writers() -> None:
    writers, appends_each = 6, 25
    finished = threading.Event()
    seen: list[int] = []

    def writer() -> None:
        for _ in range(appends_each):
            with transaction.atomic():
                counter = Counter.open("w")
                repo.save(counter, CommandContext())
                # Widen the window between drawing a position and committing it.
                time.sleep(random.uniform(0, 0.003))

    @closing_connections
    def reader() -> None:
        checkpoint = 0
        while True:
            done = finished.is_set()
            batch = store.read_all(after_position=checkpoint, limit=7)
            seen.extend(e.position for e in batch)
            checkpoint = batch[-1].position if batch else checkpoint
            if done and not batch:
                return

    follower = threading.Thread(target=reader)
    follower.start()
    run_in_threads(writer, [()] * writers)
    finished.set()
    follower.join(timeout=60)

    written = list(Event.objects.order_by("position").values_list("position", flat=True))
    assert len(written) == writers * appends_each
    assert seen == written  # every event, once, in order


@pytest.mark.parametrize("serialized", [True, False], ids=["append-lock", "no-lock-control"])
def test_an_event_that_commits_late_is_not_skipped(serialized: bool, monkeypatch) -> None:
    """Writer A draws a position and stalls before commit while writer B appends after it.

    B does not wait for A: appends run side by side. A reader that reads meanwhile waits
    for A instead, so it never returns B's later position without A's. The control run
    without the lock shows the same reader would skip A's event forever.
    """
    if not serialized:
        monkeypatch.setattr(store, "APPEND_LOCK_KEY", None)
    a_inserted, release_a = threading.Event(), threading.Event()
    first_read: list = []

    def writer_a() -> None:
        with transaction.atomic():
            repo.save(Counter.open("A"), CommandContext())
            a_inserted.set()
            release_a.wait(timeout=20)

    def reader() -> None:
        first_read.extend(store.read_all(after_position=0))

    a = threading.Thread(target=closing_connections(writer_a))
    a.start()
    assert a_inserted.wait(timeout=20)
    b = threading.Thread(
        target=closing_connections(lambda: repo.save(Counter.open("B"), CommandContext()))
    )
    b.start()
    b.join(timeout=10)  # B commits while A is still open: it doesn't wait for A
    b_committed_while_a_open = not b.is_alive()
    if not b_committed_while_a_open:
        release_a.set()
        b.join(timeout=20)
    r = threading.Thread(target=closing_connections(reader))
    r.start()
    wait_until(lambda: not r.is_alive() or someone_waits("advisory"), timeout=20)
    release_a.set()
    for thread in (a, r):
        thread.join(timeout=20)
    checkpoint = first_read[-1].position if first_read else 0
    second_read = store.read_all(after_position=checkpoint)

    assert b_committed_while_a_open
    seen = [e.payload.label for e in first_read + second_read if hasattr(e.payload, "label")]
    assert seen == (["A", "B"] if serialized else ["B"])


def test_incremented_events_are_typed_on_read() -> None:
    stream_id = _open_counter()
    counter = repo.load(stream_id)
    counter.increment(4)
    repo.save(counter, CommandContext())
    assert store.read_stream(stream_id)[-1].payload == Incremented(by=4)


def test_a_transaction_that_has_appended_reads_its_own_events() -> None:
    with transaction.atomic():
        repo.save(Counter.open("mine"), CommandContext())
        seen = [e.payload.label for e in store.read_all(after_position=0)]
        transaction.set_rollback(True)

    assert seen == ["mine"]
    assert store.read_all(after_position=0) == []  # nothing of that transaction committed


def test_the_log_is_read_gap_free_only_at_read_committed() -> None:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(DatabaseError, match="only at READ COMMITTED"):
            store.read_all(after_position=0)
        transaction.set_rollback(True)


def test_reading_leaves_no_append_lock_behind_even_when_cancelled() -> None:
    """A reader cancelled while it waits must not keep the lock every append needs."""
    a_inserted, release_a = threading.Event(), threading.Event()

    def writer_a() -> None:
        with transaction.atomic():
            repo.save(Counter.open("A"), CommandContext())
            a_inserted.set()
            release_a.wait(timeout=20)

    a = threading.Thread(target=closing_connections(writer_a))
    a.start()
    assert a_inserted.wait(timeout=20)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 200")
        with pytest.raises(DatabaseError, match="statement timeout"):
            store.read_all(after_position=0)  # waits for A, then is cancelled
        transaction.set_rollback(True)
    release_a.set()
    a.join(timeout=20)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        assert cursor.fetchone()[0] == 0
    repo.save(Counter.open("B"), CommandContext())  # appends go on
    assert [e.payload.label for e in store.read_all(after_position=0)] == ["A", "B"]


def test_a_reader_whose_transaction_goes_on_holds_no_append_back() -> None:
    """The exclusive lock a read takes is released at once, not at the end of the reader's
    transaction: appends don't wait for a reader that has more to do."""
    appended = threading.Event()

    def writer() -> None:
        repo.save(Counter.open("W"), CommandContext())
        appended.set()

    with transaction.atomic():
        store.read_all(after_position=0)
        w = threading.Thread(target=closing_connections(writer))
        w.start()
        completed_while_reader_open = appended.wait(timeout=10)
    w.join(timeout=20)

    assert completed_while_reader_open
