"""Count a drained chaos run by SQL: lost, duplicated, unaccounted, ordering, rebuild.

Runs in the harness process, with Django set up against the chaos database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.management import call_command
from django.db import connection

from apps.eventstore import following, projections
from apps.eventstore.models import Event
from apps.eventstore.subscriptions import subscribers
from apps.resilience.models import DeadLetter, Delivery
from apps.todos.models import TodoView
from tests.chaos.effects import EFFECT_HANDLERS, EFFECT_STREAM_TYPE, effect_stream
from tests.chaos.load import Command

TERMINAL = {Delivery.Status.SUCCEEDED, Delivery.Status.DEAD_LETTERED, Delivery.Status.PARKED}
STREAM_OF_KIND = {"create": "todo", "update": "todo", "complete": "todo", "reminder": "reminder"}


@dataclass
class Report:
    """What a scenario counted; ``problems`` names each non-zero finding with its evidence."""

    commands: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    events: int = 0
    handler_runs: int = 0
    retries: int = 0
    dead_letters: int = 0
    lost: int = 0
    duplicated: int = 0
    unaccounted: int = 0
    problems: list[str] = field(default_factory=list)

    def flag(self, what: str, count: int, evidence: Sequence[Any], *, into: str) -> None:
        if count:
            setattr(self, into, getattr(self, into) + count)
            self.problems.append(f"{into}: {count} {what}; e.g. {list(evidence)[:5]}")


def account(commands: list[Command], *, history_until: int = 0) -> Report:
    """Return the counts of a drained run of ``commands``. Events up to position
    ``history_until`` are history loaded before the run, never published: no delivery of
    theirs is expected (they are counted in the log, its ordering and the rebuild)."""
    report = Report(commands=len(commands))
    report.outcomes = dict(Counter(c.outcome for c in commands))
    report.events = Event.objects.count()
    _ledger_totals(report)
    _commands(report, commands)
    _deliveries(report, history_until)
    _effects(report)
    _ordering(report)
    _rebuild(report)
    return report


def _ledger_totals(report: Report) -> None:
    """Handler runs: the ledger's starts, and each event a projection's follower applied."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(starts), 0), coalesce(sum(greatest(starts - 1, 0)), 0)"
            " FROM resilience_delivery"
        )
        runs, retries = cursor.fetchone()
        report.handler_runs, report.retries = int(runs), int(retries)
    for name, sub in following.followed().items():
        handed_on = Delivery.objects.filter(handler=sub.name).values("event_id")
        report.handler_runs += (
            Event.objects.filter(
                type__in=projections.projection(name).event_types,
                position__lte=projections.checkpoint(name),
            )
            .exclude(event_id__in=handed_on)  # their runs are the ledger's starts
            .count()
        )
    report.dead_letters = DeadLetter.objects.count()


def _commands(report: Report, commands: list[Command]) -> None:
    """Lost: acknowledged with no event; unaccounted: neither applied, rejected nor failed."""
    applied = set(
        Event.objects.filter(metadata__causation_id=None)
        .values_list("metadata__request_id", "stream_type")
        .distinct()
    )
    ok = [c for c in commands if c.outcome == "acknowledged"]
    missing = [c.id for c in ok if (c.id, STREAM_OF_KIND[c.kind]) not in applied]
    report.flag("acknowledged commands with no event", len(missing), missing, into="lost")
    refused_but_applied = [
        c.id
        for c in commands
        if c.outcome != "acknowledged"
        and (c.id, STREAM_OF_KIND[c.kind]) in applied
        and c.outcome == "rejected"
    ]
    report.flag(
        "rejected commands that took effect",
        len(refused_but_applied),
        refused_but_applied,
        into="unaccounted",
    )
    counted = len(ok) + sum(1 for c in commands if c.outcome in ("rejected", "failed"))
    report.flag("commands in no outcome", report.commands - counted, [], into="unaccounted")


def _deliveries(report: Report, history_until: int = 0) -> None:
    """Lost: an event whose subscribed handler has no terminal delivery, or a projection's
    event past its checkpoint (one its follower handed on must have a terminal delivery)."""
    ends = {
        (str(event_id), handler): status
        for handler, event_id, status in Delivery.objects.values_list(
            "handler", "event_id", "status"
        )
    }
    checkpoints = {name: projections.checkpoint(name) for name in following.followed()}
    missing: list[str] = []
    published = Event.objects.filter(position__gt=history_until)
    for event_id, event_type, position in published.values_list(
        "event_id", "type", "position"
    ).iterator():
        for sub in subscribers(event_type):
            if sub.projection:
                end = ends.get((str(event_id), sub.name), Delivery.Status.SUCCEEDED)
                if position > checkpoints[sub.projection] or end not in TERMINAL:
                    missing.append(f"{sub.projection}<-{event_type}:{event_id}:#{position}")
            elif ends.get((str(event_id), sub.name)) not in TERMINAL:
                missing.append(
                    f"{sub.name}<-{event_type}:{event_id}:{ends.get((str(event_id), sub.name))}"
                )
    report.flag(
        "(handler, event) pairs with no terminal delivery", len(missing), missing, into="lost"
    )


def _effects(report: Report) -> None:
    """Duplicated read-model effects, next occurrences, reminders fired, chaos effects."""
    rows = _rows(
        "SELECT data->>'series_id', data->>'occurrence', count(*) FROM eventstore_event"
        " WHERE type = 'todo.created' AND data->>'series_id' IS NOT NULL"
        " GROUP BY 1, 2 HAVING count(*) > 1"
    )
    report.flag(
        "next occurrences created twice", sum(r[2] - 1 for r in rows), rows, into="duplicated"
    )
    rows = _rows(
        "SELECT stream_id, count(*) FROM eventstore_event WHERE type = 'reminder.triggered'"
        " GROUP BY 1 HAVING count(*) > 1"
    )
    report.flag("reminders fired twice", sum(r[1] - 1 for r in rows), rows, into="duplicated")
    rows = _rows(
        "SELECT stream_id, count(*) FROM eventstore_event WHERE stream_type = %s"
        " GROUP BY 1 HAVING count(*) > 1",
        [EFFECT_STREAM_TYPE],
    )
    report.flag(
        "chaos handler effects applied twice",
        sum(r[1] - 1 for r in rows),
        rows,
        into="duplicated",
    )
    # The successes first, the effects after: an effect commits with its delivery's success,
    # so one that succeeds between the two reads (an undrained run) is not taken for lost.
    done = {
        handler: list(
            Delivery.objects.filter(handler=handler, status=Delivery.Status.SUCCEEDED).values_list(
                "event_id", flat=True
            )
        )
        for handler in EFFECT_HANDLERS
    }
    streams = set(
        Event.objects.filter(stream_type=EFFECT_STREAM_TYPE).values_list("stream_id", flat=True)
    )
    for handler in EFFECT_HANDLERS:
        lost = [str(e) for e in done[handler] if effect_stream(e, handler) not in streams]
        report.flag(f"{handler} succeeded with no effect", len(lost), lost, into="lost")


def _ordering(report: Report) -> None:
    rows = _rows(
        "SELECT stream_id, min(version), max(version), count(*) FROM eventstore_event"
        " GROUP BY 1 HAVING min(version) <> 1 OR max(version) <> count(*)"
    )
    report.flag("streams whose versions are not 1..n", len(rows), rows, into="lost")


def _rebuild(report: Report) -> None:
    """The todos read model equals a cold rebuild from the log."""
    live, live_rows = _todo_rows()
    streams = Event.objects.filter(stream_type="todo").values("stream_id").distinct().count()
    report.flag(
        "todo streams with no read-model row", max(0, streams - len(live_rows)), [], into="lost"
    )
    report.flag(
        "read-model rows beyond todo streams",
        max(0, len(live_rows) - streams),
        [],
        into="duplicated",
    )
    call_command("rebuild_projection", "todos", "--no-progress", stdout=_Null())
    rebuilt, rebuilt_rows = _todo_rows()
    assert rebuilt != live, "the rebuild did not switch generations"
    differ = [
        k for k in live_rows.keys() | rebuilt_rows.keys() if live_rows.get(k) != rebuilt_rows.get(k)
    ]
    report.flag(
        "todos whose read-model row differs from a rebuild", len(differ), differ, into="lost"
    )


def _todo_rows() -> tuple[int, dict[str, tuple[Any, ...]]]:
    generation = projections.current_generation("todos")
    fields = [f.name for f in TodoView._meta.concrete_fields if f.name not in ("id", "generation")]
    rows = TodoView.objects.filter(generation=generation).values_list(*fields)
    return generation, {str(row[fields.index("todo_id")]): tuple(row) for row in rows}


def _rows(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


class _Null:
    def write(self, *_: Any) -> None:
        pass

    def flush(self) -> None:
        pass
