"""Dry run: what a dead letter's handler would do now, done in a transaction rolled back.

The handler runs on the letter's event (its edited payload, if any) exactly as a replay
would, processed mark included; the rows it writes are counted per table, the
events it appends are read back before the rollback, and its outbound calls (email,
webhooks) are listed by ``apps.resilience.outbound`` instead of sent. The rollback takes
the rows, the events, their outbox rows and the processed mark with it, and discards the
on-commit callbacks (no broker message is sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max
from django.test.utils import override_settings

from apps.eventstore.models import Event
from apps.eventstore.subscriptions import subscription
from apps.resilience import outbound
from apps.resilience.classify import classify
from apps.resilience.deliveries import _mark_processed
from apps.resilience.models import DeadLetter
from apps.resilience.runtime import _decode

_VERBS = ("inserted", "updated", "deleted")


@dataclass
class DryRunReport:
    """What the handler would have done: rows per table, events, outbound calls, or its error."""

    dead_letter_id: int
    handler: str
    writes: dict[str, dict[str, int]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    outbound: list[dict[str, Any]] = field(default_factory=list)
    already_processed: bool = False
    error_kind: str = ""
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return not self.error


class _RolledBack(Exception):
    """Raised at the end of the run to roll everything back."""


class _WriteCounter:
    """Rows this transaction inserted, updated and deleted per table, from PostgreSQL's own
    per-transaction counters: they see the writes of stored functions too (the event store
    appends through one), which parsing the statements Django sends would miss."""

    SQL = "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables"

    def __init__(self) -> None:
        self.before = self._read()
        self.rows: dict[str, dict[str, int]] = {}

    def _read(self) -> dict[str, tuple[int, int, int]]:
        if connection.vendor != "postgresql":  # the embedded default (SQLite) keeps no counts
            return {}
        with connection.cursor() as cursor:
            cursor.execute(self.SQL)
            return {name: (ins, upd, dele) for name, ins, upd, dele in cursor.fetchall()}

    def stop(self) -> None:
        """Record the rows written since the counter was made."""
        for table, counts in sorted(self._read().items()):
            earlier = self.before.get(table, (0, 0, 0))
            changed = {
                verb: now - then
                for verb, now, then in zip(_VERBS, counts, earlier, strict=True)
                if now > then
            }
            if changed:
                self.rows[table] = changed


def dry_run(dead_letter_id: int) -> DryRunReport:
    """Run the letter's handler on its event and return what it would have done; nothing
    it does is kept or sent."""
    letter = DeadLetter.objects.get(pk=dead_letter_id)
    report = DryRunReport(dead_letter_id=letter.pk, handler=letter.handler)
    backend = f"{outbound.__name__}.HeldBackEmailBackend"
    if backend != settings.EMAIL_BACKEND:  # not already swapped by a concurrent dry run
        outbound.HeldBackEmailBackend.real_backend = settings.EMAIL_BACKEND
    with override_settings(EMAIL_BACKEND=backend), outbound.held_back() as calls:
        try:
            with transaction.atomic():
                counter = _WriteCounter()
                _run(letter, report)
                counter.stop()
                raise _RolledBack
        except _RolledBack:
            pass
        report.outbound = list(calls)
    report.writes = counter.rows
    return report


def _run(letter: DeadLetter, report: DryRunReport) -> None:
    """1. Note the log's last position. 2. Insert the processed mark and run the handler in
    a savepoint (a failure rolls the savepoint back and is reported).
    3. Read the events appended since, before the caller rolls everything back."""
    if letter.event_id is None:
        report.error = "the dead letter has no event to run its handler on"
        return
    row = Event.objects.get(event_id=letter.event_id)
    last = Event.objects.aggregate(last=Max("position"))["last"] or 0
    try:
        sub = subscription(letter.handler)
        recorded = _decode(row, letter.pk)  # its edited payload, if any
        with transaction.atomic():
            if not _mark_processed(sub.name, row.event_id):
                report.already_processed = True
                return
            sub.func(recorded)
    except Exception as exc:
        report.error_kind = classify(exc).kind
        report.error = f"{type(exc).__name__}: {exc}"
        return
    report.events = [
        {"type": event.type, "stream": f"{event.stream_type}/{event.stream_id}", "data": event.data}
        for event in Event.objects.filter(position__gt=last).order_by("position")
    ]
