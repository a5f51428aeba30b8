"""A repository loads only streams of its own type: another type's stream is "not found".

An id is just a UUID: a reminder's id handed to the todos' repository must answer as a
missing todo does (``StreamNotFound``), not replay the wrong events into the wrong class.
"""

from __future__ import annotations

import pytest

from apps.eventstore.exceptions import StreamNotFound
from apps.eventstore.models import Snapshot
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext
from tests.eventstore.counter import Counter, SnapshottingCounter

pytestmark = pytest.mark.django_db


class OtherSnapshottingCounter(SnapshottingCounter):
    """The same state and snapshots as SnapshottingCounter, in streams of another type."""

    stream_type = "test.other-snapshotting-counter"


def test_a_stream_of_another_type_is_not_found() -> None:
    counter = Counter.open("apples")
    Repository(Counter).save(counter, CommandContext())

    with pytest.raises(StreamNotFound, match=str(counter.id)):
        Repository(SnapshottingCounter).load(counter.id)


def test_a_snapshot_of_another_type_is_not_used() -> None:
    repo = Repository(SnapshottingCounter)
    counter = SnapshottingCounter.open("snap")
    counter.increment(5)
    counter.increment(5)  # version 3: a snapshot
    repo.save(counter, CommandContext())
    assert Snapshot.objects.filter(stream_id=counter.id).exists()

    with pytest.raises(StreamNotFound):
        Repository(OtherSnapshottingCounter).load(counter.id)


def test_a_stream_of_its_own_type_still_loads() -> None:
    counter = Counter.open("pears")
    counter.increment(2)
    Repository(Counter).save(counter, CommandContext())

    loaded = Repository(Counter).load(counter.id)

    assert (loaded.label, loaded.total, loaded.version) == ("pears", 2, 2)
