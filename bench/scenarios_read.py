"""Read-side scenarios: projection replay, the HTTP API under load, dead-letter queries."""

from __future__ import annotations

import random
import statistics
import sys
import time
import uuid
from datetime import timedelta

import httpx
from django.conf import settings
from django.db import connection
from django.utils import timezone

from bench import load
from bench.harness import Measured, Processes, Result, repeat, wait_for
from bench.scenarios import Sizes, _analyze, _raw, _todo_events


def replay(sizes: Sizes) -> Result:
    from apps.eventstore import projections
    from apps.todos.projections import todos_projection

    have = projections.count_events("todos")
    if have < sizes.replay:
        _todo_events(sizes.replay - have)
    events = projections.count_events("todos")
    types = list(todos_projection.event_types)
    # Fresh statistics, as autovacuum would have taken by now on a live system: planned on
    # those of an emptier table, each batch's read sorts every later event (0.4 s a batch).
    _analyze("eventstore_event")

    def ours() -> float:
        return events / projections.rebuild("todos", batch=2000).seconds

    def raw_scan() -> float:
        with _raw() as conn, conn.cursor(name="scan") as cursor:
            cursor.itersize = 2000
            started = time.perf_counter()
            cursor.execute(
                "SELECT * FROM eventstore_event WHERE type = ANY(%s) ORDER BY position", [types]
            )
            rows = sum(1 for _ in cursor)
            return rows / (time.perf_counter() - started)

    repeats = sizes.repeats if events <= 50_000 else 3
    ours_m, base_m = repeat(ours, repeats, warmup=0), repeat(raw_scan, repeats)
    ratio = ours_m.median / base_m.median
    return Result(
        f"replay: rebuild todos over {events:,} events",
        "events/s",
        ours_m,
        base_m,
        "≥ 0.5 of baseline",
        ratio >= 0.5,
        {"repeats": repeats},
    )


def _api_user(todos: int) -> tuple[str, int]:
    from django.contrib.auth import get_user_model

    from apps.accounts.services import issue_token
    from apps.eventstore import projections
    from apps.eventstore.repository import Repository
    from apps.eventstore.store import CommandContext
    from apps.todos.aggregates import Todo

    user = get_user_model().objects.create_user(
        f"bench-{uuid.uuid4().hex[:6]}", password=uuid.uuid4().hex
    )
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    repo, due = Repository(Todo), timezone.now() + timedelta(days=1)
    for start in range(0, todos, 500):
        batch = [
            Todo.create(
                owner_id=user.pk,
                title=f"todo {n}",
                priority=random.choice(["low", "high"]),
                due_at=due,
            )
            for n in range(start, min(todos, start + 500))
        ]
        repo.save_many(batch, CommandContext(actor_id=str(user.pk)))
    settings.OUTBOX_PUBLISH_ON_COMMIT = True
    projections.rebuild("todos", batch=2000)  # the read model of every todo, at once
    return issue_token(user=user).key, user.pk


CLIENTS = 16


def api(sizes: Sizes, processes: Processes) -> list[Result]:
    from tests.support.broker import free_port

    token, _ = _api_user(sizes.api_todos)
    port = free_port()
    server = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",  # sync workers: one request per process at a time, no GIL shared between them
        "--log-level",
        "warning",
    ]
    processes.start(*load.pinned(server, load.SERVER_CORE), log="gunicorn")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(base), timeout=60, what="gunicorn")
    results = []
    for method, p99_target in (("GET", 50.0), ("POST", 80.0)):
        url = base + "/api/v1/todos/" + ("?page_size=50" if method == "GET" else "")
        load.run(url, token, method, CLIENTS, 1.0)  # warm up
        runs = [
            load.run(url, token, method, CLIENTS, sizes.api_seconds) for _ in range(sizes.repeats)
        ]
        p99 = Measured.of([r.p99 for r in runs])
        results.append(
            Result(
                f"API {method} /api/v1/todos/ p99, {CLIENTS} clients",
                "ms",
                p99,
                None,
                f"p99 ≤ {p99_target:.0f} ms",
                p99.median <= p99_target,
                {
                    "p50_ms": round(statistics.median(r.p50 for r in runs), 1),
                    "requests": sum(r.requests for r in runs),
                    "load_generator": load.generator(),
                    # wrk and gunicorn each on a core of their own (PostgreSQL and Redis
                    # run wherever the kernel puts them); the Python client is never pinned.
                    "pinned": load.generator() == "wrk" and load.pinned([], load.SERVER_CORE) != [],
                },
            )
        )
    return results


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/health/", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def dead_letters(sizes: Sizes) -> list[Result]:
    from apps.resilience.models import DeadLetter
    from apps.resilience.services import dead_letters as service

    _fill_dead_letters(sizes.dead_letters)

    def listing() -> float:
        started = time.perf_counter()
        page = list(DeadLetter.objects.filter(status="pending").order_by("-last_failed_at")[:100])
        service.groups()
        service.stats()
        assert page
        return (time.perf_counter() - started) * 1000

    listed = repeat(listing, sizes.repeats)
    claim = DeadLetter.objects.filter(status="pending", next_retry_at__lte=timezone.now()).order_by(
        "next_retry_at"
    )
    with connection.cursor() as cursor:
        sql, params = claim[:100].query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    uses_index = "deadletter_due_idx" in plan
    return [
        Result(
            f"dead letters: list + group + stats of {sizes.dead_letters:,}",
            "ms",
            listed,
            None,
            "≤ 200 ms",
            listed.median <= 200,
        ),
        Result(
            "dead-letter sweep: claim due rows",
            "index",
            Measured(1.0 if uses_index else 0.0, 0, 1),
            None,
            "plan uses the partial due index",
            uses_index,
            {"plan": plan.splitlines()[:4]},
        ),
    ]


def _fill_dead_letters(count: int) -> None:
    from apps.resilience.models import DeadLetter

    now = timezone.now()
    kinds = ["transient", "validation", "system", "timeout", "not_found"]
    due = min(1000, count // 100)
    rows = []
    for n in range(count):
        is_due = n < due
        rows.append(
            DeadLetter(
                handler=f"bench.handler{n % 7}",
                event_id=uuid.uuid4(),
                kind=kinds[n % 5],
                severity="medium",
                exception_type="BenchError",
                message="bench",
                fingerprint=f"fp{n % 40:02d}",
                first_failed_at=now,
                last_failed_at=now - timedelta(seconds=n),
                status="pending" if is_due else "resolved",
                next_retry_at=now - timedelta(seconds=1) if is_due else None,
            )
        )
    DeadLetter.objects.bulk_create(rows, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE resilience_deadletter")
