"""The todos projection: TodoView rows and TodoStats counters, built from todo events.

Its follower applies todo events in log order, a batch at a time
(``apps.eventstore.following``). Events of one todo are applied in version order: one
already applied is skipped, one ahead of the next expected version is refused as
``OutOfOrder``. An event a batch hands on to the per-event path is deferred by the runtime
on ``OutOfOrder``, spending no attempt, until the missing one has been applied (the
delivery ledger sees to it that the missing one comes).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from apps.eventstore.bulk import insert_rows
from apps.eventstore.projections import Projection, register
from apps.eventstore.registry import RecordedEvent
from apps.resilience.taxonomy import Unavailable
from apps.todos import fields
from apps.todos.events import (
    TodoCompleted,
    TodoCreated,
    TodoDeleted,
    TodoReopened,
    TodoRestored,
    TodoUpdated,
)
from apps.todos.models import STATS_COUNTERS, TodoStats, TodoView
from apps.todos.rules import TodoStatus

_VIEW_COLUMNS = TodoView._meta.concrete_fields
# A row's identity and what only its creation sets; every other column an event may change.
_SET_ON_CREATION = frozenset(("id", "generation", "todo_id", "owner_id", "series_id", "created_at"))
_CHANGING_FIELDS = [f.name for f in _VIEW_COLUMNS if f.name not in _SET_ON_CREATION]
# How long an early event waits before it is tried again (scaled like the retry policies).
OUT_OF_ORDER_WAIT_SECONDS = 1.0
TODO_EVENTS = (TodoCreated, TodoUpdated, TodoCompleted, TodoReopened, TodoDeleted, TodoRestored)


class OutOfOrder(Unavailable):
    """An event arrived before the one it follows; try again once that one is applied."""

    def __init__(self, message: str) -> None:
        wait = OUT_OF_ORDER_WAIT_SECONDS * settings.RESILIENCE_DELAY_SCALE
        super().__init__(message, retry_at=timezone.now() + timedelta(seconds=wait))


class TodoRows:
    def apply(self, event: RecordedEvent, generation: int) -> None:
        view = (
            TodoView.objects.select_for_update()
            .filter(generation=generation, todo_id=event.stream_id)
            .first()
        )
        applied = view.version if view else 0
        if event.version <= applied:
            return  # applied before: a redelivery or a replay
        if event.version != applied + 1:
            raise OutOfOrder(
                f"todo {event.stream_id} v{event.version} arrived before v{applied + 1}"
            )
        before = _counted(view)
        view = _mutate(view, event, generation)
        view.version, view.updated_at = event.version, event.metadata.occurred_at
        view.save()
        _adjust_stats(generation, view.owner_id, before, _counted(view))

    def apply_live_batch(self, events: list[RecordedEvent], generation: int) -> list[RecordedEvent]:
        """Apply events in log order as ``apply`` would, with one locking read of the rows,
        two bulk writes and one counter upsert per owner; return unapplied the events of a
        todo from its first that is early (an earlier one was handed on and not applied
        yet), which ``apply`` would refuse as ``OutOfOrder``.

        A row another writer (a handed-on event's delivery) changed meanwhile is read after
        its change (the lock waits for it); a row created meanwhile makes the insert fail,
        and the follower applies the batch again one event at a time.
        """
        ids = sorted({event.stream_id for event in events})
        views: dict[uuid.UUID, Any] = {
            view.todo_id: view
            for view in TodoView.objects.select_for_update()
            .filter(generation=generation, todo_id__in=ids)
            .order_by("todo_id")
        }
        before = {todo_id: (view.owner_id, _counted(view)) for todo_id, view in views.items()}
        touched: set[uuid.UUID] = set()
        early: set[uuid.UUID] = set()
        refused: list[RecordedEvent] = []
        for event in events:
            view = views.get(event.stream_id)
            applied = view.version if view else 0
            if event.stream_id in early or event.version > applied + 1:
                early.add(event.stream_id)
                refused.append(event)
                continue
            if event.version <= applied:
                continue
            view = views[event.stream_id] = _mutate(view, event, generation)
            view.version, view.updated_at = event.version, event.metadata.occurred_at
            touched.add(event.stream_id)
        TodoView.objects.bulk_create([views[i] for i in touched if i not in before])
        changed = [views[i] for i in touched if i in before]
        if changed:
            TodoView.objects.bulk_update(changed, _CHANGING_FIELDS)
        deltas: dict[int, dict[str, int]] = {}
        for todo_id in sorted(touched):
            view = views[todo_id]
            was = before.get(todo_id, (view.owner_id, None))[1]
            _count_change(deltas.setdefault(view.owner_id, {}), was, _counted(view))
        for owner_id, changes in sorted(deltas.items()):
            if changes := {name: n for name, n in changes.items() if n}:
                _add_to_stats(generation, owner_id, changes)
        return refused

    def apply_batch(self, events: list[RecordedEvent], generation: int) -> None:
        """Apply events in log order with one read and two bulk writes; counters come later.

        A rebuild fills a cleared generation in log order, so a todo whose first event here
        is its creation has no row yet: only todos created in an earlier batch are read.
        """
        first_seen: dict[uuid.UUID, int] = {}
        for event in events:
            first_seen.setdefault(event.stream_id, event.version)
        existing = [todo_id for todo_id, version in first_seen.items() if version > 1]
        views: dict[uuid.UUID, Any] = (
            {
                v.todo_id: v
                for v in TodoView.objects.filter(generation=generation, todo_id__in=existing)
            }
            if existing
            else {}
        )
        created: dict[uuid.UUID, _NewRow] = {}
        for event in events:
            view = views.get(event.stream_id)
            if event.version <= (view.version if view else 0):
                continue
            if event.version != (view.version if view else 0) + 1:
                raise OutOfOrder(f"todo {event.stream_id} v{event.version} is not the next version")
            view = views[event.stream_id] = _mutate(view, event, generation, _NewRow)
            view.version, view.updated_at = event.version, event.metadata.occurred_at
            if isinstance(view, _NewRow):
                created[event.stream_id] = view
        insert_rows(TodoView, created.values())
        changed = [v for v in views.values() if isinstance(v, TodoView)]
        TodoView.objects.bulk_update(changed, _CHANGING_FIELDS, batch_size=1000)

    def finish(self, generation: int) -> None:
        """Derive the generation's counters from its rows (what the live path keeps by deltas)."""
        TodoStats.objects.filter(generation=generation).delete()
        counts: dict[int, TodoStats] = {}
        rows = (
            TodoView.objects.filter(generation=generation)
            .values("owner_id", "status", "priority")
            .annotate(n=Count("id"))
            .order_by()
        )
        for row in rows:
            stats = counts.setdefault(
                row["owner_id"], TodoStats(generation=generation, owner_id=row["owner_id"])
            )
            setattr(stats, row["status"], getattr(stats, row["status"]) + row["n"])
            if row["status"] != TodoStatus.DELETED:
                stats.total += row["n"]
                setattr(stats, row["priority"], getattr(stats, row["priority"]) + row["n"])
        TodoStats.objects.bulk_create(counts.values(), batch_size=1000)

    def clear(self, generation: int) -> None:
        TodoView.objects.filter(generation=generation).delete()
        TodoStats.objects.filter(generation=generation).delete()


def _mutate(
    view: Any, event: RecordedEvent, generation: int, new: Callable[..., Any] | None = None
) -> Any:
    """Apply ``event`` to ``view`` (a TodoView, or a ``_NewRow`` of a rebuild); return it.
    A creation makes the row with ``new`` (a saved TodoView's ``_new_view`` by default)."""
    payload = event.payload
    if isinstance(payload, TodoCreated):
        view = (new or _new_view)(
            generation=generation,
            todo_id=event.stream_id,
            owner_id=payload.owner_id,
            status=TodoStatus.OPEN,
            series_id=payload.series_id,
            created_at=event.metadata.occurred_at,
        )
        _set_fields(view, {name: getattr(payload, name) for name in fields.EDITABLE})
        return view
    assert view is not None  # version 1 is always a creation
    if isinstance(payload, TodoUpdated):
        _set_fields(view, fields.from_json(payload.changes))
    elif isinstance(payload, TodoCompleted):
        view.status, view.completed_at = TodoStatus.COMPLETED, payload.completed_at
    elif isinstance(payload, TodoReopened):
        view.status, view.completed_at = TodoStatus.OPEN, None
    elif isinstance(payload, TodoDeleted):
        view.status, view.deleted_at = TodoStatus.DELETED, payload.deleted_at
    elif isinstance(payload, TodoRestored):
        view.status, view.deleted_at = (
            (TodoStatus.COMPLETED if view.completed_at else TodoStatus.OPEN),
            None,
        )
    return view


def _new_view(**values: Any) -> TodoView:
    """Return a new TodoView through Django's positional fast path (a rebuild builds one per
    todo); fields not given take their defaults, as with keyword arguments."""
    # django-stubs checks the unpacked list as the first field's (id's) value.
    return TodoView(  # type: ignore[misc]
        *[values[f.attname] if f.attname in values else f.get_default() for f in _VIEW_COLUMNS]
    )


class _NewRow:
    """A TodoView row a rebuild creates: its columns as plain attributes, which ``COPY``
    reads (a model instance costs ~25 µs to build, more than PostgreSQL takes to store it).
    """

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(_CONSTANT_DEFAULTS)
        for name, make in _MADE_DEFAULTS:
            setattr(self, name, make())
        self.__dict__.update(values)


# Each column's default: computed once, or made anew for each row (tags' list).
_CONSTANT_DEFAULTS = {
    f.attname: f.get_default()
    for f in _VIEW_COLUMNS
    if not (f.has_default() and callable(f.default))
}
_MADE_DEFAULTS = [
    (f.attname, f.get_default) for f in _VIEW_COLUMNS if f.has_default() and callable(f.default)
]


def _set_fields(view: Any, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(view, name, value)
    view.priority_rank = fields.PRIORITY_RANK[view.priority]
    view.tags_text = "".join(f"|{tag}" for tag in view.tags) + "|" if view.tags else ""
    view.search_text = f"{view.title}\n{view.description}".lower()


def _counted(view: Any) -> tuple[str, str] | None:
    return (view.status, view.priority) if view is not None else None


def _adjust_stats(
    generation: int, owner_id: int, before: tuple[str, str] | None, after: tuple[str, str] | None
) -> None:
    if before == after:
        return
    delta: dict[str, int] = {}
    _count_change(delta, before, after)
    if changes := {name: n for name, n in delta.items() if n}:
        _add_to_stats(generation, owner_id, changes)


def _count_change(
    delta: dict[str, int], before: tuple[str, str] | None, after: tuple[str, str] | None
) -> None:
    """Add to ``delta`` what a row moving from ``before`` to ``after`` does to its counters."""
    for state, sign in ((before, -1), (after, 1)):
        if state is None:
            continue
        status, priority = state
        delta[status] = delta.get(status, 0) + sign
        if status != TodoStatus.DELETED:
            delta["total"] = delta.get("total", 0) + sign
            delta[priority] = delta.get(priority, 0) + sign


def _add_to_stats(generation: int, owner_id: int, changes: dict[str, int]) -> None:
    """Add ``changes`` to the owner's counters in one upsert (the row may not exist yet)."""
    quote = connection.ops.quote_name
    counts = {name: changes.get(name, 0) for name in STATS_COUNTERS}
    columns = ", ".join(quote(name) for name in counts)
    updates = ", ".join(
        f"{quote(n)} = todos_todostats.{quote(n)} + EXCLUDED.{quote(n)}" for n in changes
    )
    sql = (
        f"INSERT INTO todos_todostats (generation, owner_id, {columns})"
        f" VALUES (%s, %s{', %s' * len(counts)})"
        f" ON CONFLICT (generation, owner_id) DO UPDATE SET {updates}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [generation, owner_id, *counts.values()])


todos_projection = register(
    Projection(
        name="todos",
        event_types=frozenset(cls.event_type for cls in TODO_EVENTS),
        rows=TodoRows(),
    )
)
