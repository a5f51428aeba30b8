"""A rebuild pauses Python's cyclic collector and runs it only once cycles pile up."""

from __future__ import annotations

import gc
import weakref

import pytest

from apps.eventstore import projections


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def _cycle() -> weakref.ref[_Node]:
    return weakref.ref(_Node())


def test_a_batch_that_leaves_few_cycles_is_not_followed_by_a_collection() -> None:
    with projections._collecting_per_batch() as batch_done:
        assert not gc.isenabled()
        left = _cycle()
        batch_done()
        assert left() is not None  # not collected: the young generation barely grew
    gc.collect()
    assert left() is None


def test_cycles_past_the_limit_are_collected_after_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(projections, "YOUNG_OBJECTS_LIMIT", 1_000)
    with projections._collecting_per_batch() as batch_done:
        first = _cycle()
        kept = [_Node() for _ in range(1_500)]  # live objects count as growth too
        batch_done()
        assert first() is None
        second = _cycle()
        batch_done()  # measured from after the last collection: no growth since
        assert second() is not None
        assert kept
    gc.collect()


def test_the_collector_resumes_as_it_was() -> None:
    assert gc.isenabled()
    with projections._collecting_per_batch():
        pass
    assert gc.isenabled()
    gc.disable()
    try:
        with projections._collecting_per_batch():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
