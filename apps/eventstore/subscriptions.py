"""Which handlers react to which event types, and what the runtime must know to run them.

``@handles(TodoCompleted, ...)`` registers a function under a stable name; the relay sends
one message per (handler, event) to the handler's queue, except to a projection's live path
(``projection="todos"``), whose follower reads the log in batches and hands the handler only
the events a batch could not apply (``apps.eventstore.following``). The other keywords are for the
runtime that executes handlers (``apps.resilience.runtime``): retry policies, time limits
and the two hooks. They are explicit keyword arguments, so a mistyped one is a
``TypeError`` when the handler module is imported, not an option silently ignored.

The event store sits below the runtime and imports nothing from it, so the runtime's own
types appear here only as far as this layer can name them:

- ``retry`` maps an error kind's name (``ErrorKind`` values are ``str``) to a retry policy.
  The values are ``object`` here; the runtime checks each key is a kind and each value a
  ``RetryPolicy`` before it runs the handler, and dead-letters the delivery as a
  configuration error otherwise.
- ``on_dead_letter`` receives the runtime's ``apps.resilience.hooks.DeadLetterView``; this
  layer can't name that class, hence ``Any`` for that one parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypedDict

from apps.eventstore.registry import DomainEvent, RecordedEvent

HandlerFunc = Callable[[RecordedEvent], Any]
# handle_error(exc, event): called on every failed run, before the retry decision.
ErrorHook = Callable[[Exception, RecordedEvent], object]
# on_dead_letter(letter, event): called once the pair is dead-lettered; ``letter`` is an
# ``apps.resilience.hooks.DeadLetterView`` (see the module docstring).
DeadLetterHook = Callable[[Any, RecordedEvent], object]


class PublishOptions(TypedDict, total=False):
    """The per-message Celery options of a handler (keyword arguments of ``send_task``)."""

    soft_time_limit: float
    time_limit: float


_NO_RETRY_OVERRIDES: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True)
class Subscription:
    """A handler, what it listens to, and how the runtime should run it."""

    name: str
    event_types: frozenset[str]
    func: HandlerFunc
    # Ordered handlers (projections) must see a stream's events in version order.
    ordered: bool = False
    # The projection whose live path this is: its follower applies events in batches
    # (``apps.eventstore.following``); the handler gets only the events a batch hands on.
    projection: str | None = None
    queue: str = "handlers"
    # Per-kind retry policies replacing the defaults in the settings (checked by the runtime).
    retry: Mapping[str, object] = field(default_factory=lambda: _NO_RETRY_OVERRIDES)
    soft_time_limit: float | None = None
    time_limit: float | None = None
    handle_error: ErrorHook | None = None
    on_dead_letter: DeadLetterHook | None = None

    def publish_options(self) -> PublishOptions:
        """Return the per-message Celery options this handler asks for (its time limits)."""
        options: PublishOptions = {}
        if self.soft_time_limit is not None:
            options["soft_time_limit"] = self.soft_time_limit
        if self.time_limit is not None:
            options["time_limit"] = self.time_limit
        return options


_by_name: dict[str, Subscription] = {}


def handles(
    *event_classes: type[DomainEvent],
    name: str | None = None,
    ordered: bool = False,
    projection: str | None = None,
    queue: str = "handlers",
    retry: Mapping[str, object] | None = None,
    soft_time_limit: float | None = None,
    time_limit: float | None = None,
    handle_error: ErrorHook | None = None,
    on_dead_letter: DeadLetterHook | None = None,
) -> Callable[[HandlerFunc], HandlerFunc]:
    """Subscribe the decorated function to ``event_classes`` under ``name``.

    The name defaults to ``module.function`` and must stay stable: it is stored in
    processed marks and dead letters. See the module docstring for the runtime's keywords.
    """
    if not event_classes:
        raise ValueError("handles() needs at least one event class")
    if retry is not None and not all(isinstance(kind, str) for kind in retry):
        raise TypeError("handles(retry=...) maps error kind names to retry policies")
    for hook_name, hook in (("handle_error", handle_error), ("on_dead_letter", on_dead_letter)):
        if hook is not None and not callable(hook):
            raise TypeError(f"handles({hook_name}=...) must be callable, not {hook!r}")
    retry_overrides = MappingProxyType(dict(retry)) if retry else _NO_RETRY_OVERRIDES

    def register(func: HandlerFunc) -> HandlerFunc:
        handler_name = name or f"{func.__module__}.{func.__qualname__}"
        existing = _by_name.get(handler_name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"handler name {handler_name!r} is already taken by {existing.func}")
        _by_name[handler_name] = Subscription(
            name=handler_name,
            event_types=frozenset(cls.event_type for cls in event_classes),
            func=func,
            ordered=ordered or projection is not None,
            projection=projection,
            queue=queue,
            retry=retry_overrides,
            soft_time_limit=soft_time_limit,
            time_limit=time_limit,
            handle_error=handle_error,
            on_dead_letter=on_dead_letter,
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
