"""Typed events: the base class, the registry by ``type`` + ``schema_version``, and upcasters.

Events are frozen pydantic models registered under a stable name (``todo.completed``) and an
integer schema version, never a module path, so moving a class never breaks stored data.
Only the latest version of a type needs a class; older payloads are upcast step by step
(v1 -> v2 -> ...) when read, and the stored rows never change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from apps.eventstore.exceptions import EventDecodeError, NewerSchemaVersion, UnknownEventType

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
E = TypeVar("E", bound="DomainEvent")

_classes: dict[str, type[DomainEvent]] = {}
_upcasters: dict[tuple[str, int], Upcaster] = {}


class DomainEvent(BaseModel):
    """Base of every event payload. Subclasses are registered with :func:`event`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int]


class EventMetadata(BaseModel):
    """Who and what caused an event: stored beside the payload."""

    model_config = ConfigDict(frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime
    actor_id: str | None = None
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    request_id: str | None = None


class RecordedEvent(BaseModel):
    """An event as stored: its place in the log and in its stream, payload and metadata."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    position: int
    stream_type: str
    stream_id: uuid.UUID
    version: int
    type: str
    schema_version: int
    payload: DomainEvent
    metadata: EventMetadata

    @property
    def event_id(self) -> uuid.UUID:
        return self.metadata.event_id

    def __eq__(self, other: object) -> bool:
        """Equal to any recorded event with the same fields, whichever class read it (bulk
        reads build each type's own subclass, ``recorded_class``)."""
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return self.__dict__ == other.__dict__


def event(event_type: str, *, version: int = 1) -> Callable[[type[E]], type[E]]:
    """Register a class as the current shape of ``event_type`` at schema ``version``."""

    def register(cls: type[E]) -> type[E]:
        existing = _classes.get(event_type)
        if existing is not None and existing is not cls:
            raise ValueError(f"event type {event_type!r} is already registered to {existing}")
        cls.event_type = event_type
        cls.schema_version = version
        _classes[event_type] = cls
        return cls

    return register


def upcaster(event_type: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function turning a ``from_version`` payload into ``from_version + 1``."""

    def register(fn: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in _upcasters:
            raise ValueError(f"an upcaster for {event_type} v{from_version} is already registered")
        _upcasters[key] = fn
        return fn

    return register


def event_class(event_type: str) -> type[DomainEvent]:
    """Return the registered class of ``event_type``, or raise :class:`UnknownEventType`."""
    try:
        return _classes[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def recorded_class(event_type: str) -> type[RecordedEvent]:
    """Return the recorded event whose payload is ``event_type``'s latest class: a bulk
    reader validates a whole stored event, payload and metadata, in one pass with it."""
    cls = event_class(event_type)
    payload_class, recorded = _recorded_classes.get(event_type, (None, RecordedEvent))
    if payload_class is not cls:  # made for this class (a test may register another)
        recorded = pydantic.create_model(
            f"Recorded{cls.__name__}", __base__=RecordedEvent, payload=(cls, ...)
        )
        _recorded_classes[event_type] = (cls, recorded)
    return recorded


# Event type -> (the payload class, the recorded-event class made for it).
_recorded_classes: dict[str, tuple[type[DomainEvent], type[RecordedEvent]]] = {}


def decode(event_type: str, schema_version: int, data: dict[str, Any] | str) -> DomainEvent:
    """Return the payload as the latest class of its type, upcasting older versions first.

    ``data`` is the stored object, or its JSON text (bulk readers): text at the latest
    schema version is parsed and validated in one pass.
    """
    cls = event_class(event_type)
    if isinstance(data, str) and schema_version != cls.schema_version:
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise EventDecodeError(f"{event_type} payload is not JSON: {exc}") from exc
    if not isinstance(data, str):
        data = _upcast(cls, event_type, schema_version, data)
    try:
        return cls.model_validate_json(data) if isinstance(data, str) else cls.model_validate(data)
    except pydantic.ValidationError as exc:
        raise EventDecodeError(
            f"{event_type} v{cls.schema_version} payload is invalid: {exc}"
        ) from exc


def _upcast(
    cls: type[DomainEvent], event_type: str, schema_version: int, data: Any
) -> dict[str, Any]:
    """Return stored ``data`` as the latest schema version's object, step by step."""
    if not isinstance(data, dict):
        raise EventDecodeError(f"{event_type} payload is {type(data).__name__}, not an object")
    if schema_version > cls.schema_version:
        raise NewerSchemaVersion(
            f"{event_type} v{schema_version} is newer than the registered v{cls.schema_version}"
        )
    for from_version in range(schema_version, cls.schema_version):
        step = _upcasters.get((event_type, from_version))
        if step is None:
            raise EventDecodeError(f"no upcaster for {event_type} v{from_version}")
        data = step(dict(data))
    return data


def encode(payload: DomainEvent) -> dict[str, Any]:
    """Return the payload as JSON-ready data."""
    return payload.model_dump(mode="json")
