"""The rules about a todo's state every layer shares: its statuses, and what "overdue" means.

Only Django's model helpers are imported, so the aggregate, the read models, the
selectors and the API can all import this module without a cycle.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from django.db import models
from django.db.models import Q


class TodoStatus(models.TextChoices):
    """Where a todo is in its life; the value is what the aggregate, the rows and the API say."""

    OPEN = "open"
    COMPLETED = "completed"
    DELETED = "deleted"


class HasStatusAndDue(Protocol):
    """A todo in memory: the aggregate, a ``TodoState`` or a ``TodoView`` row."""

    @property
    def status(self) -> str: ...

    @property
    def due_at(self) -> datetime | None: ...


# "Overdue": an open todo whose due date is before now. A todo without a due date, or a
# completed or deleted one, is never overdue. The two functions below are that one rule,
# for the database and for one todo in memory; change them together (tests/todos/test_rules.py
# checks that they agree).


def overdue_q(now: datetime) -> Q:
    """Return the filter of the todo rows overdue at ``now``."""
    return Q(status=TodoStatus.OPEN, due_at__lt=now)


def is_overdue(todo: HasStatusAndDue, now: datetime) -> bool:
    """Return whether ``todo`` is overdue at ``now``: the row ``overdue_q(now)`` selects."""
    return todo.status == TodoStatus.OPEN and todo.due_at is not None and todo.due_at < now
