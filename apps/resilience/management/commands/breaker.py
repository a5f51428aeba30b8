"""See circuit breakers, or force, clear or reset one, from the command line.

manage.py breaker list                 every breaker that ever changed state
manage.py breaker show NAME            one breaker's state
manage.py breaker force-open NAME      hold every call until cleared
manage.py breaker force-closed NAME    let every call through until cleared
manage.py breaker clear NAME           stop forcing it
manage.py breaker reset NAME           close it now and forget its failures
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import BreakerTransition

CHANGES = {
    "force-open": "hold every call until cleared",
    "force-closed": "let every call through until cleared",
    "clear": "stop forcing it",
    "reset": "close it now and forget its failures",
}


class Command(BaseCommand):
    help = "See circuit breakers, or force, clear or reset one."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        actions.add_parser("list", help="every breaker that ever changed state")
        show = actions.add_parser("show", help="one breaker's state")
        show.add_argument("name", help="e.g. webhook:hooks.example.com")
        for action, text in CHANGES.items():
            change = actions.add_parser(action, help=text)
            change.add_argument("name", help="e.g. webhook:hooks.example.com")
            change.add_argument("--reason", default="from the command line")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "list":
            self._list()
            return
        breaker = CircuitBreaker(options["name"])
        if action in CHANGES:
            _change(breaker, action, options["reason"])
        self._show(breaker)

    def _list(self) -> None:
        names = BreakerTransition.objects.order_by("breaker").values_list("breaker", flat=True)
        known = list(dict.fromkeys(names))
        if not known:
            self.stdout.write("no breakers yet: one appears when it first changes state")
        for name in known:
            self._show(CircuitBreaker(name))

    def _show(self, breaker: CircuitBreaker) -> None:
        snapshot = breaker.snapshot()
        until = f" until {snapshot.retry_at:%H:%M:%S}" if snapshot.retry_at else ""
        self.stdout.write(
            f"{breaker.name}: {snapshot.state}{until} (generation {snapshot.generation})"
        )


def _change(breaker: CircuitBreaker, action: str, reason: str) -> None:
    if action == "force-open":
        breaker.force(State.FORCED_OPEN, reason=reason)
    elif action == "force-closed":
        breaker.force(State.FORCED_CLOSED, reason=reason)
    elif action == "clear":
        breaker.force(None, reason=reason)
    else:
        breaker.reset()
