"""The aggregate base: state rebuilt from events, new events recorded after rules pass.

A subclass names its stream type and maps each event class to a mutator::

    class Counter(Aggregate):
        stream_type = "counter"

        def increment(self, by: int) -> None:
            if by <= 0:
                raise ValueError("by must be positive")   # rule first: nothing recorded
            self.record(Incremented(by=by))

        @applies(Incremented)
        def _incremented(self, event: Incremented) -> None:
            self.total += event.by
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar

from apps.eventstore.registry import DomainEvent

M = TypeVar("M", bound=Callable[..., None])


def applies(event_class: type[DomainEvent]) -> Callable[[M], M]:
    """Mark a method as the mutator that applies ``event_class`` to the aggregate's state."""

    def mark(method: M) -> M:
        method._applies = event_class  # type: ignore[attr-defined]
        return method

    return mark


class Aggregate:
    """Base of every event-sourced aggregate."""

    stream_type: ClassVar[str]
    # Take a snapshot every N events (None: never). Needs to_snapshot/from_snapshot.
    snapshot_every: ClassVar[int | None] = None
    # Bump when the snapshot's shape changes: older snapshots are then ignored.
    snapshot_schema: ClassVar[int] = 1
    _mutators: ClassVar[dict[type[DomainEvent], Callable[..., None]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mutators = dict(getattr(cls, "_mutators", {}))
        for attribute in vars(cls).values():
            event_class = getattr(attribute, "_applies", None)
            if event_class is not None:
                mutators[event_class] = attribute
        cls._mutators = mutators

    def __init__(self, stream_id: uuid.UUID) -> None:
        self.id = stream_id
        self.version = 0
        self._pending: list[DomainEvent] = []

    @property
    def loaded_version(self) -> int:
        """Return the version the aggregate had in the store before its pending events."""
        return self.version - len(self._pending)

    def record(self, event: DomainEvent) -> None:
        """Apply a new event and keep it for the repository to save."""
        self.apply(event)
        self._pending.append(event)

    def apply(self, event: DomainEvent) -> None:
        """Apply one event (new or replayed) and advance the version."""
        try:
            mutator = self._mutators[type(event)]
        except KeyError:
            raise TypeError(
                f"{type(self).__name__} has no mutator for {type(event).__name__}"
            ) from None
        mutator(self, event)
        self.version += 1

    def pending_events(self) -> list[DomainEvent]:
        """Return the events recorded since the last save, oldest first."""
        return list(self._pending)

    def mark_saved(self) -> None:
        """Forget pending events once the repository has committed them."""
        self._pending.clear()

    def to_snapshot(self) -> dict[str, Any]:
        """Return the state as JSON-ready data (override with snapshot_every)."""
        raise NotImplementedError(f"{type(self).__name__} does not support snapshots")

    @classmethod
    def from_snapshot(cls, stream_id: uuid.UUID, version: int, state: dict[str, Any]) -> Self:
        """Return an aggregate restored from ``to_snapshot`` data at ``version``."""
        raise NotImplementedError(f"{cls.__name__} does not support snapshots")
