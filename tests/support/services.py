"""Checks that the suite runs on the real services, and per-process isolation on Redis."""

from __future__ import annotations

import os
from typing import Any

import pytest
import redis
from celery import current_app


def require_real_services(settings: Any) -> None:
    """Stop the run unless the settings point at PostgreSQL and Redis, and both answer."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        raise pytest.UsageError(
            f"the suite needs PostgreSQL (DATABASE_URL), got {engine}; run it with `make test`"
        )
    if not settings.REDIS_URL or not settings.CELERY_BROKER_URL.startswith("redis"):
        raise pytest.UsageError(
            "the suite needs Redis (REDIS_URL, CELERY_BROKER_URL); use `make test`"
        )
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise pytest.UsageError(f"Redis at {settings.REDIS_URL} does not answer: {exc}") from exc


def require_debug(settings: Any) -> None:
    """Stop the run unless it was started as ``make test`` starts it: with ``DEBUG=1``.

    Backstop's settings default to production (DEBUG off: HTTPS redirects, secure cookies,
    no private webhooks), which the suite's plain-http clients and local receivers can't
    use; the test command turns DEBUG on explicitly, as ``make run`` does.
    """
    if not settings.DEBUG and settings.SECURE_SSL_REDIRECT:
        raise pytest.UsageError("run the suite with DEBUG=1 (as `make test` does)")


def redis_db_url(url: str, db: int) -> str:
    """Return ``url`` pointing at database ``db`` instead of its own."""
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


def isolate_redis_per_xdist_worker(settings: Any, worker: str) -> None:
    """Point the cache and the broker of this test process at a Redis db of its own, emptied.

    Celery workers started by the tests inherit the same URL, so messages of one pytest
    process never reach the workers (and database) of another.
    """
    # BACKSTOP_TEST_REDIS_DB lets two test runs share one Redis without meeting.
    db = int(os.environ.get("BACKSTOP_TEST_REDIS_DB", "1")) + int(worker.removeprefix("gw") or 0)
    url = redis_db_url(settings.REDIS_URL, db)
    settings.REDIS_URL = url
    settings.CACHES["default"]["LOCATION"] = url
    settings.CELERY_BROKER_URL = url
    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    os.environ.update(CELERY_BROKER_URL=url, REDIS_URL=url)
    current_app.conf.broker_url = url
    redis.Redis.from_url(url).flushdb()
