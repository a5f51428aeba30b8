"""``manage.py prune [--dry-run]``: run retention now, as beat's task does."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.console import retention


class Command(BaseCommand):
    help = "Delete the rows past their retention age (see the *_RETENTION_DAYS settings)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="count what this run would delete, delete nothing",
        )

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        verb = "would delete" if dry_run else "deleted"
        counts = retention.prune(dry_run=dry_run, progress=self._progress(verb))
        total = sum(counts.values())
        self.stdout.write(f"{verb} {total} rows in all: " + _listing(counts))

    def _progress(self, verb: str) -> retention.Progress:
        def report(table: str, rows: int) -> None:
            self.stdout.write(f"{table}: {verb} {rows}")

        return report


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{table} {rows}" for table, rows in sorted(counts.items())) or "nothing"
