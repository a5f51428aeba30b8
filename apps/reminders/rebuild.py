"""Rebuilding the reminders' state table from the event log, which is the truth.

``ReminderState`` is written inline by the services (see ``apps.reminders.models``); this
module rewrites its rows to what the reminder streams say, for after a restore, a bug or a
hand edit. ``row_values`` is the one mapping from a reminder to its row, used by both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import OperationalError
from django.utils import timezone

from apps.eventstore.folding import folded_under_append_lock
from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent
from apps.reminders import events
from apps.reminders.aggregates import Reminder
from apps.reminders.models import ReminderState

EVENT_TYPES = frozenset(
    cls.event_type
    for cls in (
        events.ReminderScheduled,
        events.ReminderSnoozed,
        events.ReminderCancelled,
        events.ReminderRestored,
        events.ReminderTriggered,
    )
)
#: The columns the log decides; ``created_at`` and ``updated_at`` are the row's own.
LOG_COLUMNS = (
    "todo_id",
    "owner_id",
    "remind_at",
    "channels",
    "status",
    "version",
    "triggered_at",
    "cancel_reason",
)


class RebuildBusy(Exception):
    """A reminder command holds a row the rebuild must change; run the rebuild again."""


@dataclass
class Folded:
    """One reminder stream folded, and when its first and last events occurred."""

    reminder: Reminder
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class RebuildReport:
    streams: int
    inserted: int
    updated: int
    deleted: int


def row_values(reminder: Reminder) -> dict[str, object]:
    """Return the reminder's row as the log says it is: its ``LOG_COLUMNS``."""
    return {column: getattr(reminder, column) for column in LOG_COLUMNS}


def count_events() -> int:
    """Return how many events a rebuild folds (for a progress bar)."""
    return Event.objects.filter(type__in=EVENT_TYPES).count()


def rebuild_states(
    *, batch: int = 1000, progress: Callable[[int], None] | None = None
) -> RebuildReport:
    """Rewrite every ``ReminderState`` row to what the log says; return what changed.

    1. Fold the reminder streams from the whole log, batch by batch, holding no lock:
       commands go on meanwhile.
    2. In one transaction, take the append lock: no event of any stream commits until
       this one does. Every service writes a row only after appending in the same
       transaction, so no command's row write can interleave from here on either.
    3. Fold the events that committed since step 1 (the catch-up), and read the rows.
    4. Lock the rows that differ from the log with ``FOR UPDATE NOWAIT``. A command that
       locked one of them (snooze, cancel, the sweep) is waiting for the append lock we
       hold: waiting for it would deadlock, so the rebuild gives up (``RebuildBusy``) and
       is run again. Rows the log agrees with are not touched: such a command writes its
       own row, from the log, after we commit.
    5. Insert the missing rows, update the differing ones, delete rows of no reminder
       stream; commit, which releases the lock.
    """
    folded: dict[uuid.UUID, Folded] = {}
    with folded_under_append_lock(
        lambda recorded: _apply(folded, recorded),
        types=EVENT_TYPES,
        batch=batch,
        progress=progress,
    ):
        return _rewrite(folded)


def _apply(folded: dict[uuid.UUID, Folded], recorded: RecordedEvent) -> None:
    if recorded.stream_type != Reminder.stream_type:
        return
    at = recorded.metadata.occurred_at
    stream = folded.setdefault(recorded.stream_id, Folded(Reminder(recorded.stream_id), at, at))
    stream.reminder.apply(recorded.payload)
    stream.last_at = at


def _rewrite(folded: dict[uuid.UUID, Folded]) -> RebuildReport:
    rows = {row.reminder_id: row for row in ReminderState.objects.all()}
    stale = [reminder_id for reminder_id in rows if reminder_id not in folded]
    changed = [row for key, row in rows.items() if key in folded and _repair(row, folded[key])]
    _lock_nowait([*stale, *(row.reminder_id for row in changed)])
    deleted, _ = ReminderState.objects.filter(reminder_id__in=stale).delete()
    now = timezone.now()
    for row in changed:
        row.updated_at = now  # the row's own column: when it was last written
    ReminderState.objects.bulk_update(changed, [*LOG_COLUMNS, "updated_at"])
    missing = [_new_row(stream) for key, stream in folded.items() if key not in rows]
    _insert(missing, folded)
    return RebuildReport(len(folded), len(missing), len(changed), deleted)


def _repair(row: ReminderState, stream: Folded) -> bool:
    """Set the row's log columns to the log's; return whether any differed."""
    wanted = row_values(stream.reminder)
    differs = any(getattr(row, column) != value for column, value in wanted.items())
    for column, value in wanted.items():
        setattr(row, column, value)
    return differs


def _lock_nowait(reminder_ids: list[uuid.UUID]) -> None:
    try:
        list(
            ReminderState.objects.select_for_update(nowait=True)
            .filter(reminder_id__in=reminder_ids)
            .values_list("reminder_id", flat=True)
        )
    except OperationalError as exc:  # lock_not_available
        raise RebuildBusy("a reminder command holds a row to rebuild; run it again") from exc


def _new_row(stream: Folded) -> ReminderState:
    return ReminderState(reminder_id=stream.reminder.id, **row_values(stream.reminder))


def _insert(rows: list[ReminderState], folded: dict[uuid.UUID, Folded]) -> None:
    """Insert the rows, stamped with their stream's first and last event times."""
    ReminderState.objects.bulk_create(rows)  # auto_now(_add) stamps them with now: reset below
    for row in rows:
        stream = folded[row.reminder_id]
        row.created_at, row.updated_at = stream.first_at, stream.last_at
    ReminderState.objects.bulk_update(rows, ["created_at", "updated_at"])
