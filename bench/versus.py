"""Backstop against the library a user might pick instead: ``eventsourcing``'s PostgreSQL
recorder on the same server, in the same run.

Both sides record one new aggregate with one event per call, from one process: Backstop's
``Repository.save`` (its outbox row included) and ``eventsourcing``'s ``Application.save``
(its notification log, ordered by a table lock, included). The library gets its own
database, so neither side's tables or indexes touch the other's.
"""

from __future__ import annotations

import time

import psycopg
from django.conf import settings
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from bench.harness import Result, repeat
from bench.scenarios import Sizes, _our_appends, _raw

DATABASE = "backstop_bench_eventsourcing"


class Counter(Aggregate):
    """One aggregate, created with one event (as ``bench.domain.new_ticker(1)``)."""

    def __init__(self, n: int) -> None:
        self.n = n


class Counters(Application[object]):
    pass


def _admin() -> psycopg.Connection:
    conn = _raw()
    conn.autocommit = True  # CREATE and DROP DATABASE run outside a transaction
    return conn


def _fresh_database() -> dict[str, str]:
    with _admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    db = settings.DATABASES["default"]
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": DATABASE,
        "POSTGRES_HOST": str(db["HOST"] or "127.0.0.1"),
        "POSTGRES_PORT": str(db["PORT"] or 5432),
        "POSTGRES_USER": str(db["USER"]),
        "POSTGRES_PASSWORD": str(db.get("PASSWORD") or ""),
    }


def _library_saves(app: Counters, count: int) -> float:
    started = time.perf_counter()
    for n in range(count):
        app.save(Counter(n=n))
    return count / (time.perf_counter() - started)


def eventsourcing_library(sizes: Sizes) -> Result:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False  # as in the append rows: the relay is elsewhere
    app = Counters(env=_fresh_database())
    try:
        n = sizes.appends
        theirs = repeat(lambda: _library_saves(app, n), sizes.repeats)
        ours = repeat(lambda: _our_appends(n, 1), sizes.repeats)
    finally:
        app.close()
        settings.OUTBOX_PUBLISH_ON_COMMIT = True
        with _admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    ratio = ours.median / theirs.median
    return Result(
        "append, 1 new aggregate per call, against eventsourcing's Application.save",
        "events/s",
        ours,
        theirs,
        "≥ 2.0 of baseline",
        ratio >= 2.0,
        {"library": f"eventsourcing {_version()}"},
    )


def _version() -> str:
    from importlib.metadata import version

    return version("eventsourcing")
