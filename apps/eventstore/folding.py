"""Folding the log into state that must agree with it: read it all without a lock, then
catch up under the append lock and write while no event can commit."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from django.db import transaction

from apps.eventstore.registry import RecordedEvent
from apps.eventstore.store import scan, take_append_lock


@contextmanager
def folded_under_append_lock(
    apply: Callable[[RecordedEvent], object],
    *,
    types: Iterable[str],
    batch: int = 1000,
    progress: Callable[[int], object] | None = None,
) -> Iterator[None]:
    """Call ``apply`` on every event of ``types`` in log order; the block runs with all of
    them applied and no event able to commit.

    1. Fold the whole log, batch by batch, holding no lock: commands go on meanwhile.
    2. In one transaction, take the append lock and fold the events committed since.
    3. Run the caller's block (it writes what the log says) in that transaction; its
       commit releases the lock.
    """
    types = list(types)
    after = _fold(apply, 0, types, batch, progress)
    with transaction.atomic():
        take_append_lock()
        _fold(apply, after, types, batch, progress)
        yield


def _fold(
    apply: Callable[[RecordedEvent], object],
    after: int,
    types: list[str],
    batch: int,
    progress: Callable[[int], object] | None,
) -> int:
    """Apply the events of ``types`` after position ``after``; return the last position read."""
    for recorded in scan(after_position=after, types=types, batch=batch, progress=progress):
        apply(recorded)
        after = recorded.position
    return after
