"""Liveness of the stores Backstop depends on: database, cache and broker."""

from __future__ import annotations

import time
from collections.abc import Callable

from celery import current_app
from django.core.cache import cache
from django.db import connection


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
