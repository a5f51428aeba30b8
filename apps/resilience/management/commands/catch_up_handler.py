"""Queue the deliveries a handler missed because it was added after its events were stored."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.eventstore.subscriptions import Subscription, all_subscriptions, subscription
from apps.resilience.services import catch_up


class Command(BaseCommand):
    help = (
        "Record a queued delivery for every stored event of NAME's types that has none for "
        "NAME; the reconciler sends them when due (or --send-now)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the handler's registered name")
        parser.add_argument(
            "--since-position", type=int, default=0, help="only events after this log position"
        )
        parser.add_argument("--batch", type=int, default=1000, help="events read per query")
        parser.add_argument("--dry-run", action="store_true", help="count, write nothing")
        parser.add_argument(
            "--send-now",
            action="store_true",
            help="also send the queued messages now (failed sends are left to the reconciler)",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        sub = _subscription(name)
        if sub.projection:
            raise CommandError(
                f"{name} is the live path of projection {sub.projection!r}, whose follower "
                f"reads the log from its checkpoint: nothing to catch up "
                f"(manage.py rebuild_projection {sub.projection} replays it from the start)"
            )
        if options["batch"] < 1:
            raise CommandError("--batch must be at least 1")
        if options["dry_run"] and options["send_now"]:
            raise CommandError("--dry-run writes and sends nothing; drop --send-now")
        after = options["since_position"]
        total = catch_up.events_to_scan(sub.event_types, after_position=after)
        with tqdm(
            total=total, unit="ev", disable=options["no_progress"], file=self.stderr._out
        ) as bar:
            report = catch_up.catch_up(
                sub.name,
                sub.event_types,
                after_position=after,
                batch=options["batch"],
                dry_run=options["dry_run"],
                send=options["send_now"],
                progress=bar.update,
            )
        self.stdout.write(self.style.SUCCESS(_summary(sub.name, report, options["dry_run"])))


def _subscription(name: str) -> Subscription:
    """Return the handler registered as ``name``, or fail listing the registered names."""
    try:
        return subscription(name)
    except KeyError:
        known = ", ".join(s.name for s in all_subscriptions()) or "none registered"
        raise CommandError(f"unknown handler {name!r}; registered: {known}") from None


def _summary(name: str, report: catch_up.CatchUpReport, dry_run: bool) -> str:
    """Return the one-line outcome the command prints."""
    if dry_run:
        return f"Would queue {report.queued} deliveries to {name} ({report.scanned} events read)."
    line = f"Queued {report.queued} deliveries to {name} ({report.scanned} events read)"
    if report.sent or report.send_failures:
        line += f"; sent {report.sent} now, {report.send_failures} left to the reconciler"
    else:
        line += "; the reconciler sends them when due"
    return line + "."
