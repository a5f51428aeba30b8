"""Show a circuit breaker's state, or force it open or closed, from the command line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import BreakerTransition


class Command(BaseCommand):
    help = "Show breakers, or force one open/closed, clear the force, or reset it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="breaker name, e.g. webhook:hooks.example.com")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--force-open", action="store_true")
        action.add_argument("--force-closed", action="store_true")
        action.add_argument("--clear", action="store_true", help="stop forcing it")
        action.add_argument("--reset", action="store_true", help="close it now, forget failures")
        parser.add_argument("--reason", default="from the command line")

    def handle(self, *args: Any, name: str | None, **options: Any) -> None:
        if name is None:
            if any(options[k] for k in ("force_open", "force_closed", "clear", "reset")):
                raise CommandError("name the breaker to change")
            for known in (
                BreakerTransition.objects.order_by().values_list("breaker", flat=True).distinct()
            ):
                self._show(CircuitBreaker(known))
            return
        breaker = CircuitBreaker(name)
        if options["force_open"]:
            breaker.force(State.FORCED_OPEN, reason=options["reason"])
        elif options["force_closed"]:
            breaker.force(State.FORCED_CLOSED, reason=options["reason"])
        elif options["clear"]:
            breaker.force(None, reason=options["reason"])
        elif options["reset"]:
            breaker.reset()
        self._show(breaker)

    def _show(self, breaker: CircuitBreaker) -> None:
        snapshot = breaker.snapshot()
        until = f" until {snapshot.retry_at:%H:%M:%S}" if snapshot.retry_at else ""
        self.stdout.write(
            f"{breaker.name}: {snapshot.state}{until} (generation {snapshot.generation})"
        )
