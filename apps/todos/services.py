"""Todo commands: the only code that writes todos. Each loads, calls the aggregate, saves."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction

from apps.eventstore import store
from apps.eventstore.exceptions import ConcurrencyConflict, StreamNotFound
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.repository import Repository, retry_on_conflict
from apps.eventstore.store import CommandContext
from apps.resilience.taxonomy import BusinessRuleViolation, NotFound
from apps.todos.aggregates import Todo
from apps.todos.events import TodoCompleted
from apps.todos.rules import TodoStatus

repository = Repository(Todo)


class TodoNotFound(NotFound):
    """No such todo for this user (another user's todo is "not found" too: no leak)."""

    def __init__(self, todo_id: uuid.UUID) -> None:
        super().__init__(f"todo {todo_id} not found")


@dataclass(frozen=True)
class TodoState:
    """A todo as the write side knows it right after a command."""

    id: uuid.UUID
    owner_id: int
    version: int
    title: str
    description: str
    priority: str
    due_at: datetime | None
    tags: list[str]
    recurrence: str | None
    series_id: uuid.UUID | None
    status: TodoStatus
    completed_at: datetime | None
    deleted_at: datetime | None

    @classmethod
    def of(cls, todo: Todo) -> TodoState:
        return cls(
            id=todo.id,
            owner_id=todo.owner_id,
            version=todo.version,
            title=todo.title,
            description=todo.description,
            priority=todo.priority,
            due_at=todo.due_at,
            tags=list(todo.tags),
            recurrence=todo.recurrence,
            series_id=todo.series_id,
            status=todo.status,
            completed_at=todo.completed_at,
            deleted_at=todo.deleted_at,
        )


def create_todo(*, owner_id: int, context: CommandContext, **values: Any) -> TodoState:
    """Create a todo for ``owner_id`` and return it."""
    todo = Todo.create(owner_id=owner_id, **values)
    repository.save(todo, context)
    return TodoState.of(todo)


def update_todo(
    *,
    owner_id: int,
    todo_id: uuid.UUID,
    context: CommandContext,
    expected_version: int | None = None,
    **values: Any,
) -> TodoState:
    """Change the given fields of the owner's todo."""
    return _run(owner_id, todo_id, context, expected_version, lambda todo: todo.update(**values))


def complete_todo(
    *,
    owner_id: int,
    todo_id: uuid.UUID,
    context: CommandContext,
    expected_version: int | None = None,
) -> TodoState:
    return _run(owner_id, todo_id, context, expected_version, Todo.complete)


def reopen_todo(
    *,
    owner_id: int,
    todo_id: uuid.UUID,
    context: CommandContext,
    expected_version: int | None = None,
) -> TodoState:
    return _run(owner_id, todo_id, context, expected_version, Todo.reopen)


def delete_todo(
    *,
    owner_id: int,
    todo_id: uuid.UUID,
    context: CommandContext,
    expected_version: int | None = None,
) -> TodoState:
    return _run(owner_id, todo_id, context, expected_version, Todo.delete)


def restore_todo(
    *,
    owner_id: int,
    todo_id: uuid.UUID,
    context: CommandContext,
    expected_version: int | None = None,
) -> TodoState:
    return _run(owner_id, todo_id, context, expected_version, Todo.restore)


def create_next_occurrence(*, completed: RecordedEvent) -> TodoState | None:
    """Create the next todo of a recurring series after ``completed``; None if there is none.

    Exactly once: the next todo's id is fixed by the series and the completed todo's id
    (``Todo.next_occurrence``), so a second attempt (a redelivery, or completing again after
    a reopen) finds it exists, or conflicts with a concurrent one, and creates nothing.
    """
    assert isinstance(completed.payload, TodoCompleted)
    todo = repository.load(completed.stream_id)
    following = todo.next_occurrence(completed.payload.completed_at)
    if following is None or store.stream_exists(following.id):
        return None
    try:
        # A savepoint: the handler's transaction goes on (and commits) after a conflict.
        with transaction.atomic():
            repository.save(following, CommandContext(actor_id="system").caused_by(completed))
    except ConcurrencyConflict:
        return None  # created meanwhile by a concurrent delivery
    return TodoState.of(following)


def next_occurrence_id(*, completed: RecordedEvent) -> uuid.UUID | None:
    """Return the id of the todo ``create_next_occurrence`` creates (or created) after
    ``completed``; None when there is none, and none was created before.

    The id is the one ``Todo.next_occurrence`` fixes, so it can be asked before or after
    creating it, any number of times. A todo that stopped recurring since (deleted, its rule
    changed) still names the occurrence it had, when one exists.
    """
    assert isinstance(completed.payload, TodoCompleted)
    todo = repository.load(completed.stream_id)
    following = todo.next_occurrence(completed.payload.completed_at)
    if following is not None:
        return following.id
    created = todo.next_occurrence_id()
    return created if store.stream_exists(created) else None


def reopen_after_failure(
    *, todo_id: uuid.UUID, reason: str, context: CommandContext
) -> TodoState | None:
    """Reopen a completed todo as the system, with ``reason`` in its ``todo.reopened``; return
    it, or None, doing nothing, when it is not completed (reopened already, deleted, unknown).
    """

    def reopen(todo: Todo) -> bool:
        if todo.status != TodoStatus.COMPLETED:
            return False
        todo.reopen(reason)
        return True

    return _run_as_system(todo_id, context, reopen)


def delete_occurrence(*, todo_id: uuid.UUID, context: CommandContext) -> TodoState | None:
    """Delete (softly) a later todo of a series as the system; return it, or None, doing
    nothing, when it doesn't exist or is deleted already.

    Undoes ``create_next_occurrence``. A todo of no series is refused (a business rule
    violation): deleting one would undo no occurrence, only lose the owner's todo.
    """
    return _run_as_system(todo_id, context, _delete_occurrence)


def _delete_occurrence(todo: Todo) -> bool:
    if todo.status == TodoStatus.DELETED:
        return False
    if todo.series_id is None:
        raise BusinessRuleViolation("only a later todo of a series is deleted as an occurrence")
    todo.delete()
    return True


def load_todo(*, owner_id: int, todo_id: uuid.UUID) -> Todo:
    """Return the owner's todo from the event store, or raise ``TodoNotFound``."""
    try:
        todo = repository.load(todo_id)
    except StreamNotFound:
        raise TodoNotFound(todo_id) from None
    if todo.owner_id != owner_id:
        raise TodoNotFound(todo_id)
    return todo


def _run(
    owner_id: int,
    todo_id: uuid.UUID,
    context: CommandContext,
    expected_version: int | None,
    change: Callable[[Todo], None],
) -> TodoState:
    """Load, change, save. Unpinned commands re-run on a conflict; pinned ones report it."""

    def command() -> TodoState:
        todo = load_todo(owner_id=owner_id, todo_id=todo_id)
        if expected_version is not None and todo.version != expected_version:
            raise ConcurrencyConflict(todo_id, expected_version, todo.version)
        change(todo)
        repository.save(todo, context)
        return TodoState.of(todo)

    if expected_version is not None:
        return command()
    return retry_on_conflict(command)


def _run_as_system(
    todo_id: uuid.UUID, context: CommandContext, change: Callable[[Todo], bool]
) -> TodoState | None:
    """Load any owner's todo, change it, save; re-run on a conflict, as unpinned commands are.
    None when the todo doesn't exist or ``change`` declines (returns False): nothing saved."""

    def command() -> TodoState | None:
        try:
            todo = repository.load(todo_id)
        except StreamNotFound:
            return None
        if not change(todo):
            return None
        repository.save(todo, context)
        return TodoState.of(todo)

    return retry_on_conflict(command)


@dataclass(frozen=True)
class BulkResult:
    """What happened to one item of a bulk create."""

    index: int
    todo: TodoState | None = None
    errors: dict[str, list[str]] | None = None


def bulk_create_todos(
    *, owner_id: int, items: list[dict[str, Any]], atomic: bool, context: CommandContext
) -> list[BulkResult]:
    """Create many todos; ``atomic`` creates all or none, otherwise every valid one.

    Every item is validated first, so the result names every invalid item, not the first.
    """
    from apps.todos.fields import InvalidTodo

    todos: list[tuple[int, Todo]] = []
    results: dict[int, BulkResult] = {}
    for index, values in enumerate(items):
        try:
            todos.append((index, Todo.create(owner_id=owner_id, **values)))
        except InvalidTodo as exc:
            results[index] = BulkResult(index, errors=exc.fields)
    if atomic and results:
        return [results.get(i) or BulkResult(i) for i in range(len(items))]
    repository.save_many([todo for _, todo in todos], context)
    for index, todo in todos:
        results[index] = BulkResult(index, todo=TodoState.of(todo))
    return [results[i] for i in range(len(items))]
