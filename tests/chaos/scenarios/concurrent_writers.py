"""Scenario 8: concurrent writers and a gap-free tail. Writer threads append to a few hot
streams through the event store's Python API while a reader tails the global log.

No process is started: the writers and the reader are threads of the harness process, each
with its own database connection (Django gives one per thread), against the scenario's
database. QUICK: 20 writers x 50 appends (1,000) on 10 streams; full: 20 x 500 (10,000).

1. Each writer picks a stream (seeded), reads its version just before appending one event
   with that ``expected_version``; a ``ConcurrencyConflict`` is counted and retried (read
   the version again, append again), up to ``CONFLICT_RETRIES`` times, then surfaced. Any
   other error is a finding.
2. The reader calls ``read_all(after_position=<last seen>)`` in a loop until the writers
   are done and a read started after that finds nothing new.
3. Check: every stream's versions are 1..n; each append ended appended (its event in the
   log once, at the position and version ``append`` returned) or surfaced as a conflict
   (no event); the reader saw exactly the log, in position order, each event once. A
   position the reader never saw lies below one it had seen: it committed after that read,
   a gap that was filled later (lost). The run must also show the race took place: some
   conflicts, and events read while the writers still wrote.

The row: commands = appends attempted, events = events appended, retries = conflicts
retried, lost = appends or events missing (from the log, from the reader, from 1..n),
duplicated = seen or written twice, drain_seconds = how long the reader took to catch up
once the writers were done (at most ``READER_DEADLINE``).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from django.db import connection

from apps.eventstore import store
from apps.eventstore.exceptions import ConcurrencyConflict
from apps.eventstore.models import Event
from apps.eventstore.registry import DomainEvent, event
from apps.eventstore.store import CommandContext
from tests.chaos import processes
from tests.chaos.accounting import Report
from tests.chaos.scenarios.common import Users, row

NUMBER = 8
NAME = "concurrent-writers"
ENV: dict[str, str] = {}
PROCESSES = False  # threads of the harness process write and read; no cluster

STREAM_TYPE = "chaos.hot"
WRITERS, STREAMS = 20, 10
# An append still conflicting after this many fresh reads of its stream's version is
# surfaced to its writer (counted, not a finding): with 20 writers on 10 streams a writer
# rarely loses more than a handful of races in a row.
CONFLICT_RETRIES = 50
START_TIMEOUT = 60.0  # seconds a writer waits for the others to start
READER_DEADLINE = 60.0  # seconds the reader may take to catch up once the writers are done
_STREAMS = uuid.UUID("5b0c3c5e-7a39-4d55-9a8e-2f4f6f0d8a11")


@event("chaos.hot.appended")
class HotAppended(DomainEvent):
    """One writer's ``seq``-th append: the harness finds each attempt in the log by these."""

    writer: int
    seq: int


@dataclass(frozen=True)
class Appended:
    """An append ``store.append`` returned: where it says the event went."""

    seq: int
    event_id: uuid.UUID
    stream_id: uuid.UUID
    position: int
    version: int


@dataclass
class Tally:
    """What became of one writer's appends."""

    writer: int
    appended: list[Appended] = field(default_factory=list)
    surfaced: list[int] = field(default_factory=list)  # seqs given up after CONFLICT_RETRIES
    failed: list[int] = field(default_factory=list)  # seqs that ended in another error
    retries: int = 0  # conflicts retried
    odd_conflicts: list[str] = field(default_factory=list)  # naming no version ahead
    errors: list[str] = field(default_factory=list)  # other than a conflict


def run(cluster: processes.Cluster, users: Users, *, quick: bool, seed: int) -> dict[str, Any]:
    """Run the scenario and return its table row (with its findings under ``problems``)."""
    per_writer = 50 if quick else 500
    streams = [uuid.uuid5(_STREAMS, f"{seed}:{i}") for i in range(STREAMS)]
    reader = Reader()
    tail = threading.Thread(target=reader.run, name="chaos-reader")
    tail.start()
    started = time.monotonic()
    go = threading.Barrier(WRITERS)
    with ThreadPoolExecutor(WRITERS, thread_name_prefix="chaos-writer") as pool:
        jobs = [
            pool.submit(write, w, per_writer, streams, random.Random(f"{seed}:{w}"), go)
            for w in range(WRITERS)
        ]
        tallies = [job.result() for job in jobs]
    writing = time.monotonic() - started
    reader.writers_done.set()
    tail.join(READER_DEADLINE)
    caught_up = round(time.monotonic() - started - writing, 1)
    left = {}
    if tail.is_alive():
        reader.stop.set()
        tail.join()
        left = {"reader_behind": 1}
    report = count(tallies, reader, WRITERS * per_writer)
    appended = report.outcomes.get("appended", 0)
    summary = (
        f"{WRITERS} writers, {appended} appends on {STREAMS} streams in {writing:.1f} s"
        f" ({appended / writing:.0f}/s), {report.retries} conflicts retried,"
        f" {report.outcomes.get('surfaced', 0)} surfaced; the reader saw"
        f" {reader.seen_while_writing} events while the writers wrote, in {reader.reads} reads"
    )
    return row(NAME, report, caught_up, left, summary)


def write(
    writer: int,
    appends: int,
    streams: list[uuid.UUID],
    rng: random.Random,
    go: threading.Barrier,
) -> Tally:
    """Append ``appends`` events, one at a time, each to a random hot stream; return the
    tally. Runs in a thread of its own, on its own connection (closed at the end)."""
    tally = Tally(writer)
    try:
        go.wait(START_TIMEOUT)  # every writer starts at once: they race from the first append
        for seq in range(appends):
            append_one(tally, rng.choice(streams), seq)
    finally:
        connection.close()
    return tally


def append_one(tally: Tally, stream_id: uuid.UUID, seq: int) -> None:
    """Append the writer's ``seq``-th event after the stream's version as read just before;
    on a conflict read the version again and retry, up to ``CONFLICT_RETRIES`` times."""
    payload = HotAppended(writer=tally.writer, seq=seq)
    context = CommandContext(actor_id=f"chaos-writer-{tally.writer}")
    for attempt in range(CONFLICT_RETRIES + 1):
        expected = -1
        try:
            expected = _version(stream_id)
            [recorded] = store.append(
                stream_type=STREAM_TYPE,
                stream_id=stream_id,
                expected_version=expected,
                events=[payload],
                context=context,
            )
        except ConcurrencyConflict as conflict:
            if conflict.actual_version <= expected:  # a stale read is behind, never ahead
                tally.odd_conflicts.append(f"{conflict} after reading version {expected}")
            if attempt == CONFLICT_RETRIES:
                tally.surfaced.append(seq)
                return
            tally.retries += 1
            continue
        except Exception as exc:  # any other error is a finding, with its evidence
            tally.failed.append(seq)
            tally.errors.append(f"writer {tally.writer} seq {seq}: {type(exc).__name__}: {exc}")
            return
        if recorded.version != expected + 1:
            tally.errors.append(f"appended after {expected} as version {recorded.version}")
        tally.appended.append(
            Appended(seq, recorded.event_id, stream_id, recorded.position, recorded.version)
        )
        return


def _version(stream_id: uuid.UUID) -> int:
    """Return the stream's current version (0 when it has no event)."""
    found = (
        Event.objects.filter(stream_id=stream_id)
        .order_by("-version")
        .values_list("version", flat=True)
        .first()
    )
    return found or 0


class Reader:
    """Tail the global log with ``read_all`` until the writers are done and it is caught up."""

    def __init__(self) -> None:
        self.writers_done = threading.Event()
        self.stop = threading.Event()  # the harness gave up waiting
        self.seen: list[tuple[int, uuid.UUID]] = []  # (position, event id), in read order
        self.seen_while_writing = 0
        self.reads = 0
        self.error = ""

    def run(self) -> None:
        last = 0
        try:
            while not self.stop.is_set():
                done = self.writers_done.is_set()  # before the read: it then sees every commit
                found = store.read_all(after_position=last)
                self.reads += 1
                self.seen += [(e.position, e.event_id) for e in found]
                if not done:
                    self.seen_while_writing += len(found)
                if found:
                    last = found[-1].position
                elif done:
                    return
                else:
                    time.sleep(0.002)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()


def count(tallies: list[Tally], reader: Reader, attempts: int) -> Report:
    """Return the report: every attempt accounted for, the log against the appends and
    against what the reader saw."""
    log = list(
        Event.objects.order_by("position").values_list(
            "position", "event_id", "stream_type", "stream_id", "version", "data"
        )
    )
    hot = [r for r in log if r[2] == STREAM_TYPE]
    report = Report(commands=attempts, events=len(hot))
    report.retries = sum(t.retries for t in tallies)
    report.outcomes = {
        "appended": sum(len(t.appended) for t in tallies),
        "surfaced": sum(len(t.surfaced) for t in tallies),
        "failed": sum(len(t.failed) for t in tallies),
    }
    _findings(report, "conflicts naming no version ahead of the read", tallies, "odd_conflicts")
    _findings(report, "appends that failed otherwise", tallies, "errors")
    _attempts(report, tallies, hot, attempts)
    _versions(report, hot)
    _tail(report, reader, [(r[0], r[1]) for r in log])
    if not report.retries and not report.outcomes["surfaced"]:
        report.problems.append("no conflict at all: the writers never raced")
    return report


def _findings(report: Report, what: str, tallies: list[Tally], kind: str) -> None:
    """Add one problem naming how many of the writers' ``kind`` findings there were."""
    found = [f for t in tallies for f in getattr(t, kind)]
    if found:
        report.problems.append(f"{len(found)} {what}; e.g. {found[:5]}")


def _attempts(
    report: Report, tallies: list[Tally], hot: list[tuple[Any, ...]], attempts: int
) -> None:
    """Lost: an append returned but its event is not in the log where it said; duplicated:
    an attempt in the log twice; unaccounted: in no outcome, or given up yet written."""
    stored = {r[1]: (r[3], r[0], r[4]) for r in hot}  # event id -> (stream, position, version)
    written = Counter((r[5]["writer"], r[5]["seq"]) for r in hot)
    missing = [
        str(a.event_id)
        for t in tallies
        for a in t.appended
        if stored.get(a.event_id) != (a.stream_id, a.position, a.version)
    ]
    report.flag(
        "appends returned with no such event in the log", len(missing), missing, into="lost"
    )
    twice = [k for k, n in written.items() if n > 1]
    report.flag(
        "appends in the log more than once",
        sum(written[k] - 1 for k in twice),
        twice,
        into="duplicated",
    )
    given_up = [
        (t.writer, s) for t in tallies for s in t.surfaced + t.failed if written[t.writer, s]
    ]
    report.flag("appends given up that were written", len(given_up), given_up, into="unaccounted")
    ended = sum(report.outcomes.values())
    report.flag("appends in no outcome", attempts - ended, [], into="unaccounted")


def _versions(report: Report, hot: list[tuple[Any, ...]]) -> None:
    """Lost: a hot stream whose versions are not 1..n."""
    by_stream: dict[uuid.UUID, list[int]] = {}
    for _, _, _, stream_id, version, _ in hot:
        by_stream.setdefault(stream_id, []).append(version)
    bad = [
        f"{s}: {len(v)} events, versions {min(v)}..{max(v)}"
        for s, v in by_stream.items()
        if sorted(v) != list(range(1, len(v) + 1))
    ]
    report.flag("streams whose versions are not 1..n", len(bad), bad, into="lost")


def _tail(report: Report, reader: Reader, log: list[tuple[int, uuid.UUID]]) -> None:
    """The reader's sequence is the log's, in position order, each event exactly once."""
    if reader.error:
        report.problems.append(f"the reader failed: {reader.error}")
    if not reader.seen_while_writing:
        report.problems.append("the reader saw nothing while the writers wrote: no tail race")
    positions = [p for p, _ in reader.seen]
    backwards = [(a, b) for a, b in pairwise(positions) if b <= a]
    if backwards:
        report.problems.append(f"{len(backwards)} reads out of order; e.g. {backwards[:5]}")
    seen = Counter(reader.seen)
    twice = [k for k, n in seen.items() if n > 1]
    report.flag(
        "events the reader saw twice", sum(seen[k] - 1 for k in twice), twice, into="duplicated"
    )
    missed = [p for p, e in log if (p, e) not in seen]
    report.flag(
        "events the reader never saw (a gap filled later)", len(missed), missed, into="lost"
    )
    stored = set(log)
    phantom = [p for p, e in seen if (p, e) not in stored]
    report.flag("events the reader saw that the log lacks", len(phantom), phantom, into="lost")
    if not report.problems and positions != [p for p, _ in log]:
        report.problems.append("the reader's sequence differs from the log's")
