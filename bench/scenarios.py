"""Each scenario: our figure and, where there is one, a baseline measured in the same run."""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from django.conf import settings
from django.db import connection, connections

from bench.harness import Measured, Processes, Result, repeat, wait_for


@dataclass(frozen=True)
class Sizes:
    appends: int
    pipeline: int
    replay: int
    api_todos: int
    api_seconds: float  # per repeat
    dead_letters: int
    repeats: int = 5

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(
                appends=100,
                pipeline=100,
                replay=2000,
                api_todos=500,
                api_seconds=1.0,
                dead_letters=2000,
            )
        return cls(
            appends=2000,
            pipeline=2000,
            replay=200_000,
            api_todos=10_000,
            api_seconds=4.0,
            dead_letters=100_000,
        )


def _raw() -> psycopg.Connection:
    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname=db["NAME"],
    )


RAW_INSERT = (
    "INSERT INTO bench_raw_event (event_id, stream_type, stream_id, version, type,"
    " schema_version, data, metadata, recorded_at) VALUES "
)
RAW_ROW = (
    "(%s, 'bench.ticker', %s, %s, 'bench.ticked', 1, '{\"n\": 0}', '{\"actor_id\": null}', now())"
)


def create_raw_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_raw_event")
        cursor.execute("CREATE TABLE bench_raw_event (LIKE eventstore_event INCLUDING ALL)")


def _raw_appends(count: int, per_commit: int) -> float:
    with _raw() as conn:
        started = time.perf_counter()
        for _ in range(count // per_commit):
            stream = uuid.uuid4()
            values = ", ".join([RAW_ROW] * per_commit)
            params = [p for v in range(1, per_commit + 1) for p in (uuid.uuid4(), stream, v)]
            conn.execute(RAW_INSERT + values, params)
            conn.commit()
        return count / (time.perf_counter() - started)


def _our_appends(count: int, per_commit: int) -> float:
    from apps.eventstore.repository import Repository
    from apps.eventstore.store import CommandContext
    from bench.domain import Ticker, new_ticker

    repo, context = Repository(Ticker), CommandContext(actor_id="bench")
    started = time.perf_counter()
    for _ in range(count // per_commit):
        repo.save(new_ticker(per_commit), context)
    return count / (time.perf_counter() - started)


def _in_processes(run: Callable[[int], float], writers: int, count: int) -> float:
    """Run ``run(count // writers)`` in ``writers`` forked processes at once, each with its
    own connection (as web workers are); return events/s over all of them."""
    context = multiprocessing.get_context("fork")
    connections.close_all()  # a forked child must open its own connection
    barrier = context.Barrier(writers + 1)

    def writer() -> None:
        barrier.wait()
        run(count // writers)
        connections.close_all()

    processes = [context.Process(target=writer) for _ in range(writers)]
    for process in processes:
        process.start()
    barrier.wait()
    started = time.perf_counter()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    if failed := [p.exitcode for p in processes if p.exitcode]:
        raise RuntimeError(f"bench: {len(failed)} writer processes failed: {failed}")
    return count / elapsed


def append(sizes: Sizes, per_commit: int, writers: int = 1) -> Result:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False  # the relay is measured by the pipeline scenario
    n = sizes.appends if per_commit == 1 else sizes.appends * 10
    if writers == 1:
        ours = repeat(lambda: _our_appends(n, per_commit), sizes.repeats)
        base = repeat(lambda: _raw_appends(n, per_commit), sizes.repeats)
    else:
        ours = repeat(
            lambda: _in_processes(lambda c: _our_appends(c, 1), writers, n), sizes.repeats
        )
        base = repeat(
            lambda: _in_processes(lambda c: _raw_appends(c, 1), writers, n), sizes.repeats
        )
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    events = "1 event" if per_commit == 1 else f"{per_commit} events"
    label = f"append, {events} per commit, {writers} writer{'s' * (writers > 1)}"
    ratio, target = ours.median / base.median, 0.6 if per_commit == writers == 1 else 0.5
    return Result(label, "events/s", ours, base, f"≥ {target} of baseline", ratio >= target)


def _todo_events(count: int) -> list[int]:
    """Write ``count`` todo.created events (no publishing); return their outbox ids."""
    from apps.eventstore.models import OutboxMessage
    from apps.eventstore.repository import Repository
    from apps.eventstore.store import CommandContext
    from apps.todos.aggregates import Todo

    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    repo = Repository(Todo)
    first = OutboxMessage.objects.order_by("-id").values_list("id", flat=True).first() or 0
    for start in range(0, count, 500):
        todos = [
            Todo.create(owner_id=1, title=f"bench {n}")
            for n in range(start, min(count, start + 500))
        ]
        repo.save_many(todos, CommandContext(actor_id="bench"))
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    return list(
        OutboxMessage.objects.filter(id__gt=first, published_at__isnull=True).values_list(
            "id", flat=True
        )
    )


def _pipeline_run(count: int) -> float:
    from apps.eventstore import projections, relay
    from apps.eventstore.models import OutboxMessage

    ids = _todo_events(count)
    last = OutboxMessage.objects.filter(id__in=ids).order_by("-id").values_list("event", flat=True)
    last_position = last.first()
    _analyze("todos_todoview", "eventstore_event", "eventstore_outboxmessage")
    started = time.perf_counter()
    relay.publish_pending(ids=ids, limit=len(ids))
    wait_for(
        lambda: projections.checkpoint("todos") >= last_position,
        timeout=600,
        what="the pipeline to drain",
        every=POLL,
    )
    return count / (time.perf_counter() - started)


# How often a scenario checks whether the workers are done: often enough to add little to
# a run of seconds, rarely enough that the check itself costs the measured system little.
POLL = 0.05


def _analyze(*tables: str) -> None:
    """Refresh the planner's statistics of tables the bench just filled (autovacuum may not
    have yet): a stale estimate turns the harness's own polling into a scan."""
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {table}")


def _noop_run(count: int) -> float:
    import redis
    from celery import current_app

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete("bench:noop")
    started = time.perf_counter()
    with current_app.producer_or_acquire() as producer:
        for _ in range(count):
            current_app.send_task("bench.noop", queue="handlers", producer=producer)
    wait_for(
        lambda: int(client.get("bench:noop") or 0) >= count,
        timeout=600,
        what="no-op tasks",
        every=POLL,
    )
    return count / (time.perf_counter() - started)


def pipeline(sizes: Sizes, processes: Processes) -> tuple[Result, float]:
    ours = repeat(lambda: _pipeline_run(sizes.pipeline), sizes.repeats)
    base = repeat(lambda: _noop_run(sizes.pipeline), sizes.repeats)
    ratio = ours.median / base.median
    result = Result(
        "pipeline, 2 worker processes", "events/s", ours, base, "≥ 1.0 of baseline", ratio >= 1.0
    )
    return result, ours.median


def latency(sizes: Sizes, max_rate: float) -> Result:
    """Create todos at half the pipeline's throughput, or as fast as one client can when that
    is less; latency = recorded -> the checkpoint past it. The label gives the rate reached."""
    from apps.eventstore.models import Event
    from apps.eventstore.store import CommandContext
    from apps.todos import services

    rate = max(1.0, max_rate / 2)
    count = min(sizes.pipeline, int(rate * 20))  # at most ~20 s of load
    context = CommandContext(actor_id="bench")
    watcher = _CheckpointWatcher()
    ids, started = [], time.perf_counter()
    for n in range(count):
        time.sleep(max(0.0, started + n / rate - time.perf_counter()))  # pacing the load
        ids.append(services.create_todo(owner_id=2, context=context, title=f"latency {n}").id)
    reached = count / (time.perf_counter() - started)
    wait_for(lambda: _delivered(ids), timeout=300, what="latency todos to be projected", every=POLL)
    recorded = list(Event.objects.filter(stream_id__in=ids).values_list("position", "recorded_at"))
    # The rows and the checkpoint commit together, but the watcher reads every 5 ms: wait
    # for it to have seen the last move too.
    last = max(position for position, _ in recorded)
    wait_for(lambda: watcher.passed(last), timeout=60, what="the watcher to see the checkpoint")
    watcher.stop()
    millis = sorted(
        (watcher.applied_at(position) - at) / timedelta(milliseconds=1) for position, at in recorded
    )
    p50, p99 = statistics.median(millis), millis[int(len(millis) * 0.99) - 1]
    return Result(
        f"pipeline latency at {reached:,.0f} events/s (p50)",
        "ms",
        Measured(p50, millis[0], millis[-1]),
        None,
        "p50 ≤ 25 ms, p99 ≤ 150 ms",
        p50 <= 25 and p99 <= 150,
        {"p99_ms": round(p99, 1), "events": len(millis), "asked_events_per_s": round(rate)},
    )


class _CheckpointWatcher:
    """Read the todos checkpoint (its position and when the follower moved it) every
    5 ms in a thread of its own: an event was applied when the checkpoint first
    passed it (a batch missed between two reads counts at the next one: later, not sooner).
    """

    def __init__(self) -> None:
        self.moves: list[tuple[int, datetime]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        from apps.eventstore.models import ProjectionState

        state = ProjectionState.objects.filter(name="todos").values_list("position", "updated_at")
        try:
            while not self._done.wait(0.005):
                position, at = state.get()
                if not self.moves or position > self.moves[-1][0]:
                    self.moves.append((position, at))
        finally:
            connection.close()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def passed(self, position: int) -> bool:
        return bool(self.moves) and self.moves[-1][0] >= position

    def applied_at(self, position: int) -> datetime:
        return next(at for moved_to, at in self.moves if moved_to >= position)


def _delivered(todo_ids: list[uuid.UUID]) -> bool:
    from apps.eventstore import projections
    from apps.todos.models import TodoView

    generation = projections.current_generation("todos")  # the unique index's prefix
    return TodoView.objects.filter(generation=generation, todo_id__in=todo_ids).count() == len(
        todo_ids
    )
