"""Which handlers react to which event types.

``@handles(TodoCompleted, ...)`` registers a function under a stable name; the relay sends
one message per (handler, event) to the handler's queue. Options beyond ``name``, ``ordered``
and ``queue`` are kept for the runtime that executes handlers (retry policies, time limits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apps.eventstore.registry import DomainEvent, RecordedEvent

HandlerFunc = Callable[[RecordedEvent], Any]


@dataclass(frozen=True)
class Subscription:
    """A handler and what it listens to."""

    name: str
    event_types: frozenset[str]
    func: HandlerFunc
    # Ordered handlers (projections) must see a stream's events in version order.
    ordered: bool = False
    queue: str = "handlers"
    options: dict[str, Any] = field(default_factory=dict)

    def publish_options(self) -> dict[str, Any]:
        """Return the per-message Celery options this handler asks for (its time limits)."""
        return {k: self.options[k] for k in ("soft_time_limit", "time_limit") if k in self.options}


_by_name: dict[str, Subscription] = {}


def handles(
    *event_classes: type[DomainEvent],
    name: str | None = None,
    ordered: bool = False,
    queue: str = "handlers",
    **options: Any,
) -> Callable[[HandlerFunc], HandlerFunc]:
    """Subscribe the decorated function to ``event_classes`` under ``name``.

    The name defaults to ``module.function`` and must stay stable: it is stored in
    processed marks and dead letters.
    """
    if not event_classes:
        raise ValueError("handles() needs at least one event class")

    def register(func: HandlerFunc) -> HandlerFunc:
        handler_name = name or f"{func.__module__}.{func.__qualname__}"
        existing = _by_name.get(handler_name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"handler name {handler_name!r} is already taken by {existing.func}")
        _by_name[handler_name] = Subscription(
            name=handler_name,
            event_types=frozenset(cls.event_type for cls in event_classes),
            func=func,
            ordered=ordered,
            queue=queue,
            options=options,
        )
        return func

    return register


def subscribers(event_type: str) -> list[Subscription]:
    """Return the subscriptions to ``event_type``, by name."""
    return sorted(
        (s for s in _by_name.values() if event_type in s.event_types), key=lambda s: s.name
    )


def subscription(name: str) -> Subscription:
    """Return the subscription registered as ``name`` (``KeyError`` if none)."""
    return _by_name[name]


def all_subscriptions() -> list[Subscription]:
    """Return every subscription, by name."""
    return sorted(_by_name.values(), key=lambda s: s.name)
