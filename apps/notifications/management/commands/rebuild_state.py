"""Rewrite an app's inline state table (reminders or notifications) to what the log says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.notifications import rebuild as notifications
from apps.reminders import rebuild as reminders


class Report(Protocol):
    @property
    def streams(self) -> int: ...
    @property
    def inserted(self) -> int: ...
    @property
    def updated(self) -> int: ...
    @property
    def deleted(self) -> int: ...


class Rebuild(Protocol):
    def __call__(
        self, *, batch: int = ..., progress: Callable[[int], None] | None = ...
    ) -> Report: ...


#: Each table's rebuild and how many events it folds. Here, in the upper of the two apps
#: (it may import the other), so that one command serves both.
TABLES: dict[str, tuple[Rebuild, Callable[[], int]]] = {
    "reminders": (reminders.rebuild_states, reminders.count_events),
    "notifications": (notifications.rebuild_states, notifications.count_events),
}


class Command(BaseCommand):
    help = (
        "Rewrite ReminderState or NotificationState to what the event log says, in one "
        "transaction holding the append lock (appends wait for its last step)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("table", choices=sorted(TABLES), help="whose state to rebuild")
        parser.add_argument("--batch", type=int, default=1000, help="events read per query")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, table: str, batch: int, no_progress: bool, **options: Any) -> None:
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        rebuild, count = TABLES[table]
        with tqdm(total=count(), unit="ev", disable=no_progress, file=self.stderr._out) as bar:
            try:
                report = rebuild(batch=batch, progress=bar.update)
            except reminders.RebuildBusy as exc:
                raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt {table} state from {report.streams} streams: {report.inserted} "
                f"inserted, {report.updated} repaired, {report.deleted} deleted."
            )
        )
