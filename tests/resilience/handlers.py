"""Handlers whose behaviour each test scripts through Redis, run by real workers.

``script(name, "transient", "transient", "ok")`` makes the next three runs of a handler on
the event named ``name`` fail twice and then succeed. A success appends one event to an
*effect stream* in the handler's own transaction: counting that stream's events counts
effects, so a duplicate effect can't hide.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict
from typing import Any

import httpx
import redis
from billiard.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import OperationalError, connection

from apps.eventstore import store
from apps.eventstore.models import Event
from apps.eventstore.registry import DomainEvent, RecordedEvent, event
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from apps.resilience.breakers import CircuitBreaker
from apps.resilience.hooks import DeadLetterView
from apps.resilience.policies import RetryPolicy, Strategy
from apps.resilience.taxonomy import (
    BusinessRuleViolation,
    DependencyTimeout,
    ErrorKind,
    InvalidInput,
    NotFound,
    RateLimited,
    TransientError,
    Unavailable,
)

EFFECTS = uuid.UUID("6f0c1f36-7d44-4a1c-9a55-2f0c4f1d6a10")


@event("test.job.requested")
class JobRequested(DomainEvent):
    name: str
    url: str = ""
    breaker: str = ""


@event("test.effect.recorded")
class EffectRecorded(DomainEvent):
    handler: str
    source: uuid.UUID


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def script(name: str, *steps: str) -> None:
    """Queue what the next runs on the event named ``name`` do (then "ok" for ever)."""
    if steps:
        _redis().rpush(f"script:{name}", *steps)


def next_step(name: str) -> str:
    step = _redis().lpop(f"script:{name}")
    return step.decode() if step else "ok"


def effect_stream(handler: str, name: str) -> uuid.UUID:
    return uuid.uuid5(EFFECTS, f"{handler}:{name}")


def effects(handler: str, name: str) -> int:
    """Return how many times ``handler`` took effect for the event named ``name``."""
    return Event.objects.filter(stream_id=effect_stream(handler, name)).count()


def record_effect(handler: str, recorded: RecordedEvent) -> None:
    stream_id = effect_stream(handler, recorded.payload.name)
    version = Event.objects.filter(stream_id=stream_id).count()
    store.append(
        stream_type="test.effect",
        stream_id=stream_id,
        expected_version=version,
        events=[EffectRecorded(handler=handler, source=recorded.event_id)],
        context=CommandContext().caused_by(recorded),
    )


def perform(step: str, recorded: RecordedEvent) -> None:
    """Do what ``step`` says: fail in a given way, or hang, or kill the worker process."""
    name = recorded.payload.name
    failures: dict[str, Exception] = {
        "transient": TransientError("the dependency reset the connection"),
        "db": OperationalError("server closed the connection unexpectedly"),
        "timeout": DependencyTimeout("the dependency did not answer in time"),
        "validation": InvalidInput("the payload is not acceptable"),
        "business_rule": BusinessRuleViolation("that is not allowed now"),
        "not_found": NotFound("the thing is gone"),
        "system": RuntimeError("a bug in the handler"),
        "unavailable": Unavailable("held", retry_at=_in(0.2)),
        # Longer than LEDGER_MAX_BROKER_COUNTDOWN in the tests: the wait is the ledger's.
        "slow-down": RateLimited("the dependency asked for two hours", retry_after=7200),
    }
    if step in failures:
        raise failures[step]
    if step == "exit":
        os._exit(1)  # the worker process dies as with an OOM kill
    if step == "block":
        # Publish our pid, then hold the transaction open until the test kills us.
        _redis().set(f"pid:{name}", os.getpid())
        deadline = time.monotonic() + 60
        while not _redis().exists(f"release:{name}") and time.monotonic() < deadline:
            time.sleep(0.05)
    if step == "hang":
        time.sleep(5)  # longer than the handler's soft time limit


def _in(seconds: float) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(tz=UTC) + timedelta(seconds=seconds)


@handles(JobRequested, name="test.scripted")
def scripted(recorded: RecordedEvent) -> None:
    """Runs on the default retry policies."""
    step = next_step(recorded.payload.name)
    if step == "block":  # the effect is written first, so a kill must roll it back
        record_effect("test.scripted", recorded)
        perform(step, recorded)
        return
    perform(step, recorded)
    record_effect("test.scripted", recorded)


FAST_TRANSIENT = RetryPolicy(Strategy.FIXED, max_attempts=2, base_delay=0.1)


@handles(
    JobRequested,
    name="test.overridden",
    retry={ErrorKind.TRANSIENT: FAST_TRANSIENT},
    soft_time_limit=1,
    time_limit=10,
)
def overridden(recorded: RecordedEvent) -> None:
    """Its own transient policy (2 fixed attempts) and a one-second soft time limit."""
    perform(next_step(f"overridden:{recorded.payload.name}"), recorded)
    record_effect("test.overridden", recorded)


@handles(JobRequested, name="test.stubborn", soft_time_limit=1, time_limit=2)
def stubborn(recorded: RecordedEvent) -> None:
    """On step "stubborn" it ignores its soft time limit (as C code would) until the hard
    limit kills its process; otherwise it records its effect."""
    if next_step(f"stubborn:{recorded.payload.name}") == "stubborn":
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                time.sleep(0.05)
            except SoftTimeLimitExceeded:
                continue
    record_effect("test.stubborn", recorded)


def _hook_that_raises(exc: Exception, event: RecordedEvent) -> None:
    _redis().incr(f"hook:{event.event_id}")
    _redis().set(f"hook-saw:{event.event_id}", type(event).__name__)
    raise RuntimeError("handle_error itself failed")


def _dead_letter_hook_that_raises(letter: DeadLetterView, event: RecordedEvent) -> None:
    """Keeps what it was given (types and the letter's fields) in Redis, then fails."""
    seen = {"event": type(event).__name__, "letter": type(letter).__name__, **asdict(letter)}
    _redis().set(f"dead-letter-hook:{event.event_id}", json.dumps(seen, default=str))
    raise RuntimeError("on_dead_letter itself failed")


@handles(
    JobRequested,
    name="test.hook-raises",
    handle_error=_hook_that_raises,
    on_dead_letter=_dead_letter_hook_that_raises,
)
def hook_raises(recorded: RecordedEvent) -> None:
    perform(next_step(f"hook:{recorded.payload.name}"), recorded)
    record_effect("test.hook-raises", recorded)


@handles(JobRequested, name="test.ordered", ordered=True)
def ordered(recorded: RecordedEvent) -> None:
    """Applies a stream's events in order: records each version it applied."""
    perform(next_step(f"ordered:{recorded.payload.name}"), recorded)
    _redis().rpush(f"applied:{recorded.stream_id}", recorded.version)


@handles(JobRequested, name="test.http-call", queue="handlers")
def http_call(recorded: RecordedEvent) -> None:
    """POSTs to the event's URL through the event's breaker; a 2xx is the effect."""
    job = recorded.payload
    if not job.url:
        return
    with CircuitBreaker(job.breaker or "test-http").guard():
        response = httpx.post(job.url, json={"name": job.name}, timeout=2.0)
        response.raise_for_status()
    record_effect("test.http-call", recorded)


@handles(JobRequested, name="test.sentry-probe", queue="sentry-probe")
def sentry_probe(recorded: RecordedEvent) -> None:
    """On a queue of its own, so only the worker a test starts with SENTRY_DSN runs it."""
    perform(next_step(f"sentry:{recorded.payload.name}"), recorded)


@event("test.connection.probed")
class ConnectionProbed(DomainEvent):
    name: str


@handles(ConnectionProbed, name="test.backend-pid")
def backend_pid(recorded: RecordedEvent) -> None:
    """Records which PostgreSQL backend, i.e. which connection, ran the delivery."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        _redis().rpush(f"backend:{recorded.payload.name}", cursor.fetchone()[0])
