"""The on-commit nudge: one per committed transaction, with exactly the rows it wrote."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterable
from contextlib import suppress

import pytest
from django.db import transaction

from apps.eventstore import relay, store
from apps.eventstore.models import OutboxMessage
from apps.eventstore.registry import RecordedEvent
from tests.support.probe import open_counters, probe_messages
from tests.support.threads import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


class Abort(Exception):
    """Raised to roll a block back."""


@pytest.fixture
def nudges(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    """Record each on-commit nudge (thread name, outbox ids), then publish as usual."""
    calls: list[tuple[str, list[int]]] = []
    publish = relay.publish_after_commit

    def recording(ids: list[int]) -> None:
        calls.append((threading.current_thread().name, sorted(ids)))
        publish(ids)

    monkeypatch.setattr(relay, "publish_after_commit", recording)
    return calls


def open_and_roll_back(count: int) -> None:
    """Open ``count`` counters in an atomic block (a savepoint when nested) that rolls back."""
    with suppress(Abort), transaction.atomic():
        open_counters(count)
        raise Abort


def outbox_ids(events: Iterable[RecordedEvent]) -> list[int]:
    positions = [e.position for e in events]
    return sorted(OutboxMessage.objects.filter(event_id__in=positions).values_list("id", flat=True))


def published(events: Iterable[RecordedEvent]) -> Tally[str]:
    return Tally(str(e.event_id) for e in events)


def ids_of(calls: list[tuple[str, list[int]]]) -> list[list[int]]:
    return [ids for _, ids in calls]


def test_many_appends_in_one_transaction_are_published_by_one_nudge(
    probe_queue: str, nudges: list[tuple[str, list[int]]]
) -> None:
    with transaction.atomic():
        opened = open_counters(3)
        assert nudges == [], "nothing is published before commit"

    assert ids_of(nudges) == [outbox_ids(opened)]
    assert probe_messages() == published(opened)


def test_a_rolled_back_transaction_publishes_nothing_and_the_next_only_its_own(
    probe_queue: str, nudges: list[tuple[str, list[int]]]
) -> None:
    open_and_roll_back(2)

    with transaction.atomic():
        kept = open_counters(1)

    assert ids_of(nudges) == [outbox_ids(kept)], "the next transaction started an empty batch"
    assert probe_messages() == published(kept)


def test_rows_of_a_rolled_back_savepoint_are_not_published(
    probe_queue: str, nudges: list[tuple[str, list[int]]]
) -> None:
    with transaction.atomic():
        before = open_counters(1)
        open_and_roll_back(1)

    # The nudge may name the savepoint's ids too: those rows don't exist, the relay finds
    # nothing to publish for them.
    assert len(nudges) == 1
    assert set(outbox_ids(before)) <= set(ids_of(nudges)[0])
    assert probe_messages() == published(before)
    assert OutboxMessage.objects.count() == 1


def test_rows_appended_after_a_rolled_back_savepoint_are_still_nudged(
    probe_queue: str, nudges: list[tuple[str, list[int]]]
) -> None:
    # The savepoint's rollback discards the callback its append registered first.
    with transaction.atomic():
        open_and_roll_back(1)
        after = open_counters(2)

    assert len(nudges) == 1
    assert set(outbox_ids(after)) <= set(ids_of(nudges)[0])
    assert probe_messages() == published(after)


def test_appends_in_autocommit_are_each_published_after_their_own_commit(
    probe_queue: str, nudges: list[tuple[str, list[int]]]
) -> None:
    opened = open_counters(3)

    assert ids_of(nudges) == [outbox_ids([e]) for e in opened]
    assert probe_messages() == published(opened)


def test_nothing_is_published_on_commit_when_publishing_on_commit_is_off(
    probe_queue: str, nudges: list[tuple[str, list[int]]], settings
) -> None:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    with transaction.atomic():
        open_counters(2)
    open_counters(1)

    assert nudges == []
    assert probe_messages() == Tally()
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 3


def test_two_threads_appending_at_once_each_publish_their_own_rows(
    probe_queue: str, nudges: list[tuple[str, list[int]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the append lock both transactions can hold appended rows at the same time.
    monkeypatch.setattr(store, "APPEND_LOCK_KEY", None)
    both_appended = threading.Barrier(2, timeout=10)

    def writer(name: str) -> tuple[str, list[RecordedEvent]]:
        threading.current_thread().name = name
        with transaction.atomic():
            first = open_counters(1)
            both_appended.wait()
            second = open_counters(1)
            both_appended.wait()
        return name, first + second

    results = dict(f.result() for f in run_in_threads(writer, [("alice",), ("bob",)]))

    assert sorted(nudges) == [
        ("alice", outbox_ids(results["alice"])),
        ("bob", outbox_ids(results["bob"])),
    ]
    assert probe_messages() == published(results["alice"] + results["bob"])
