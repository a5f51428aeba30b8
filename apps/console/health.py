"""Liveness of the stores Backstop depends on (database, cache, broker) and of its
processes (worker, beat: their heartbeats, ``apps.console.heartbeats``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection

from apps.console.heartbeats import freshest_heartbeat
from apps.console.models import Heartbeat


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _cache() -> None:
    key = "health:probe"
    cache.set(key, "ok", timeout=10)
    if cache.get(key) != "ok":
        raise RuntimeError("cache did not return what was written")


def _broker() -> None:
    with current_app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


CHECKS: dict[str, Callable[[], None]] = {"database": _database, "cache": _cache, "broker": _broker}
# Without these nothing works. Without the others the API still answers, degraded: the
# throttles and breakers fail open without the cache, the outbox holds events for the broker.
ESSENTIAL = frozenset({"database"})
PROCESSES = (Heartbeat.Kind.WORKER, Heartbeat.Kind.BEAT)


def run_checks() -> dict[str, dict[str, object]]:
    """Return each check's outcome (``ok`` and, on failure, the error) and duration in ms."""
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # a health probe reports failures, it doesn't raise them
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        else:
            results[name] = {"ok": True}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return results


def overall_status(failing: list[str]) -> str:
    """Return ``ok`` with nothing ``failing``, ``unavailable`` if an essential store is
    among them, ``degraded`` otherwise."""
    if not failing:
        return "ok"
    return "unavailable" if ESSENTIAL.intersection(failing) else "degraded"


def check_processes(*, database_ok: bool) -> dict[str, dict[str, object]]:
    """Return, per kind of process, ``ok`` when its freshest heartbeat is at most
    ``HEARTBEAT_STALE_SECONDS`` old, with who wrote it and when; otherwise an ``error``.
    Without the database nothing is known, and nothing is asked of it again."""
    if not database_ok:
        return {
            kind: {"ok": False, "error": "unknown: the database does not answer"}
            for kind in PROCESSES
        }
    return {kind: _process(kind) for kind in PROCESSES}


def _process(kind: str) -> dict[str, object]:
    try:
        seen = freshest_heartbeat(kind)
    except DatabaseError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if seen is None:
        return {"ok": False, "error": "no heartbeat recorded"}
    limit = settings.HEARTBEAT_STALE_SECONDS
    result: dict[str, object] = {
        "ok": seen.age_seconds <= limit,
        "hostname": seen.hostname,
        "pid": seen.pid,
        "last_seen": seen.last_seen.isoformat(),
        "age_seconds": round(seen.age_seconds, 1),
    }
    if not result["ok"]:
        result["error"] = f"stale: last heartbeat {seen.age_seconds:.1f}s ago (limit {limit:g}s)"
    return result


def report() -> dict[str, object]:
    """Return the health report: ``status`` (see ``overall_status``), the ``failing``
    stores and processes, and each store's ``checks`` and each process's result."""
    checks = run_checks()
    processes = check_processes(database_ok=bool(checks["database"]["ok"]))
    failing = [name for name, result in (checks | processes).items() if not result["ok"]]
    return {
        "status": overall_status(failing),
        "failing": failing,
        "checks": checks,
        "processes": processes,
    }
