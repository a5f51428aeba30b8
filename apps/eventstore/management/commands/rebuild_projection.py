"""Rebuild a projection's read model from the whole event log, without stopping reads."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.eventstore import projections


class Command(BaseCommand):
    help = (
        "Rebuild a read model (e.g. 'todos') from the event log into a new generation, then switch."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "name", help=f"one of: {', '.join(projections.names()) or 'none registered'}"
        )
        parser.add_argument(
            "--batch", type=int, default=1000, help="events applied per transaction"
        )
        parser.add_argument("--force", action="store_true", help="take over a rebuild that died")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(
        self, *args: Any, name: str, batch: int, force: bool, no_progress: bool, **options: Any
    ) -> None:
        if name not in projections.names():
            raise CommandError(
                f"unknown projection {name!r}; known: {', '.join(projections.names())}"
            )
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        total = projections.count_events(name)
        with tqdm(total=total, unit="ev", disable=no_progress, file=self.stderr._out) as bar:
            try:
                report = projections.rebuild(name, batch=batch, force=force, progress=bar.update)
            except projections.RebuildInProgress as exc:
                raise CommandError(f"{exc}; pass --force if that rebuild died") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt {name}: {report.events} events in {report.seconds:.2f}s "
                f"({report.events_per_second:,.0f} events/s), now generation {report.generation}."
            )
        )
