"""The event store's own errors; the resilience layer classifies them."""

from __future__ import annotations

import uuid


class EventStoreError(Exception):
    """Base of every event store error."""


class ConcurrencyConflict(EventStoreError):
    """Another writer appended to the stream since it was loaded."""

    def __init__(self, stream_id: uuid.UUID, expected: int, actual: int) -> None:
        self.stream_id = stream_id
        self.expected_version = expected
        self.actual_version = actual
        super().__init__(f"stream {stream_id} is at version {actual}, expected {expected}")


class StreamNotFound(EventStoreError):
    """No event has been recorded for the stream."""

    def __init__(self, stream_id: uuid.UUID) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id} has no events")


class UnknownEventType(EventStoreError):
    """A stored event's type has no registered class: it can't be decoded."""

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type
        super().__init__(f"unknown event type {event_type!r}: no event class is registered for it")


class EventDecodeError(EventStoreError):
    """A stored payload doesn't fit its event class, or no upcaster bridges its version."""


class NewerSchemaVersion(EventDecodeError):
    """A stored event is of a schema version newer than the running code knows (a rolling
    deploy: a newer process wrote it); a process that knows the version can decode it."""


class AppendOnlyViolation(EventStoreError):
    """Recorded events are never updated or deleted."""
