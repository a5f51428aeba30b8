"""Checks that the suite runs on the real services, and per-process isolation on Redis."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO, Any

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


# Test runs that may share this machine's PostgreSQL and Redis at once, and the Redis dbs
# each run's processes may use (one per xdist worker) unless BACKSTOP_TEST_REDIS_DB says.
RUN_SLOTS = 8
REDIS_DBS_PER_SLOT = 4
REDIS_DBS = 16
_slot_lock: IO[str] | None = None


def claim_run_slot() -> int:
    """Return the slot of this test run, claimed for as long as the run lasts.

    Two runs of the suite on one machine (a second ``make test``) must not share a test
    database or a Redis db. The first process of a run (xdist's controller, or the only
    one) takes the first free slot's lock file and hands the slot to its xdist workers
    through ``BACKSTOP_TEST_SLOT``; the lock goes with the process, however it ends.
    """
    global _slot_lock
    if "BACKSTOP_TEST_SLOT" in os.environ:
        return int(os.environ["BACKSTOP_TEST_SLOT"])
    for slot in range(RUN_SLOTS):
        lock = (Path(tempfile.gettempdir()) / f"backstop-test-slot-{slot}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _slot_lock = lock
        os.environ["BACKSTOP_TEST_SLOT"] = str(slot)
        return slot
    raise pytest.UsageError(f"{RUN_SLOTS} test runs already use this machine; wait for one")


def database_suffix(slot: int) -> str | None:
    """Return what the slot adds to the test databases' names (nothing for the first)."""
    return f"s{slot}" if slot else None


def isolate_redis_per_xdist_worker(settings: Any, worker: str, slot: int = 0) -> None:
    """Point the cache and the broker of this test process at a Redis db of its own, emptied.

    Celery workers started by the tests inherit the same URL, so messages of one pytest
    process never reach the workers (and database) of another.
    """
    # BACKSTOP_TEST_REDIS_DB pins the run's first db; otherwise its slot decides.
    first = os.environ.get("BACKSTOP_TEST_REDIS_DB") or str(1 + slot * REDIS_DBS_PER_SLOT)
    if int(first) + REDIS_DBS_PER_SLOT > REDIS_DBS:
        raise pytest.UsageError(
            f"no Redis db is left for test run {slot}: set BACKSTOP_TEST_REDIS_DB"
        )
    db = int(first) + int(worker.removeprefix("gw") or 0)
    url = redis_db_url(settings.REDIS_URL, db)
    settings.REDIS_URL = url
    settings.CACHES["default"]["LOCATION"] = url
    settings.CELERY_BROKER_URL = url
    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    os.environ.update(CELERY_BROKER_URL=url, REDIS_URL=url)
    current_app.conf.broker_url = url
    redis.Redis.from_url(url).flushdb()
