"""Circuit breakers and shared push-back, with state every worker sees through the cache.

State lives in *generations*. Generation ``g`` is closed until it has an ``opened`` time;
then it is open until ``opened + reset_timeout`` and half-open after. Leaving a generation
(open it, close it, re-open it) is one atomic ``cache.add`` of ``g:exit`` — whoever adds it
moves the breaker to ``g + 1`` and records the transition; everyone else sees ``add`` fail
and does nothing. No state is read, changed and written back, so two workers can't both
open a breaker, or close one while another re-opens it (the read-modify-write races that
shared-state breakers are known for). Half-open probes are leases: ``cache.add`` of one of
``half_open_max_calls`` slot keys with an expiry, so a prober that crashed frees its slot.
A successful probe gives its slot back after it has closed the breaker (if it did); a failed
one keeps it until its lease lapses, so a worker that read "half-open" just before the
re-opening can't take it and call the dependency that just failed.

Atomicity holds on Redis (``add`` is ``SET NX``, ``incr`` is ``INCR``); the embedded
default's file cache gives the same results for a single worker.

An unreachable cache says nothing about the dependency a breaker guards, so it must not
turn every call into a failure: ``guard`` then fails open (the call goes ahead as if the
breaker were closed, on a permit that records nothing), recording an outcome is skipped
with a warning, and the shared cooldown check lets calls through.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction

from apps.resilience.classify import classify
from apps.resilience.models import BreakerTransition
from apps.resilience.taxonomy import NOT_THE_DEPENDENCYS_FAULT, ErrorKind, Unavailable

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)
_DAY = 86_400
# What the cache raises when it can't be reached: Redis' errors, the file cache's OSError.
_CACHE_DOWN: tuple[type[Exception], ...] = (redis.RedisError, OSError)
# Transitions made inside a transaction (a handler's), written once it is over: the failing
# call that opens a breaker usually rolls its transaction back, and the record must survive.
_unwritten = threading.local()


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int
    window: int
    reset_timeout: float
    half_open_max_calls: int
    success_threshold: int
    probe_lease: float

    @classmethod
    def from_settings(cls) -> BreakerConfig:
        return cls(
            failure_threshold=settings.BREAKER_FAILURE_THRESHOLD,
            window=settings.BREAKER_WINDOW_SECONDS,
            reset_timeout=settings.BREAKER_RESET_TIMEOUT,
            half_open_max_calls=settings.BREAKER_HALF_OPEN_MAX_CALLS,
            success_threshold=settings.BREAKER_SUCCESS_THRESHOLD,
            probe_lease=settings.BREAKER_PROBE_LEASE_SECONDS,
        )


@dataclass(frozen=True)
class Permit:
    """Leave to make one call: in a closed generation, or on a half-open probe slot.

    An untracked permit was given with the cache unreachable: its outcome isn't recorded.
    """

    generation: int
    slot: int | None = None
    token: str = ""
    tracked: bool = True


@dataclass(frozen=True)
class Snapshot:
    state: State
    generation: int
    retry_at: datetime | None = None


class CircuitBreaker:
    """One named breaker, e.g. ``webhook:hooks.example.com`` or ``email``."""

    def __init__(self, name: str, config: BreakerConfig | None = None) -> None:
        self.name = name
        self.config = config or BreakerConfig.from_settings()

    # -- reading -------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Return the breaker's state as every worker sees it now."""
        forced = cache.get(self._key("forced"))
        generation = self._generation()
        if forced == State.FORCED_OPEN:
            return Snapshot(
                State.FORCED_OPEN, generation, _at(time.time() + self.config.reset_timeout)
            )
        if forced == State.FORCED_CLOSED:
            return Snapshot(State.FORCED_CLOSED, generation)
        opened = cache.get(self._key(f"g{generation}:opened"))
        if opened is None:
            return Snapshot(State.CLOSED, generation)
        half_open_at = opened + self.config.reset_timeout
        if time.time() < half_open_at:
            return Snapshot(State.OPEN, generation, _at(half_open_at))
        return Snapshot(State.HALF_OPEN, generation)

    # -- calling -------------------------------------------------------------------------
    @contextmanager
    def guard(self) -> Iterator[Permit]:
        """Run the block as one call through the breaker, recording how it went.

        Raises ``Unavailable`` (retry at the half-open time) instead of calling when the
        breaker is open, every probe slot is taken, or a shared cooldown is in force. With
        the cache unreachable the call goes ahead and its outcome goes unrecorded.
        """
        permit = self._acquire_or_pass()
        try:
            yield permit
        except Exception as exc:
            self._record_unless_cache_down(self._record_exception, permit, exc)
            raise
        self._record_unless_cache_down(self.record_success, permit)

    def acquire(self) -> Permit:
        """Return a permit to call, or raise ``Unavailable``."""
        cooldown_until = cooldown(self.name)
        if cooldown_until is not None:
            raise Unavailable(f"{self.name} asked us to wait", retry_at=_at(cooldown_until))
        current = self.snapshot()
        if current.state in (State.CLOSED, State.FORCED_CLOSED):
            return Permit(current.generation)
        if current.state is State.HALF_OPEN:
            permit = self._lease_probe(current.generation)
            if permit is not None:
                return permit
            retry_at = _at(time.time() + min(self.config.probe_lease, self.config.reset_timeout))
            raise Unavailable(
                f"{self.name} is half-open and its probes are taken", retry_at=retry_at
            )
        raise Unavailable(f"circuit {self.name} is {current.state}", retry_at=current.retry_at)

    def record_success(self, permit: Permit) -> None:
        """Count a successful call; enough successful probes close the breaker."""
        if permit.slot is None or not permit.tracked:
            return
        successes = _incr(self._key(f"g{permit.generation}:ok"), timeout=_DAY)
        if successes >= self.config.success_threshold:
            self._leave(
                permit.generation, State.HALF_OPEN, State.CLOSED, f"{successes} probes succeeded"
            )
        self._release_probe(permit)  # after closing: no extra probe slips in before it

    def record_failure(self, permit: Permit, reason: str) -> None:
        """Count a failed call: a failed probe re-opens, a full window opens."""
        if not permit.tracked:
            return
        if permit.slot is not None:
            # The slot is not given back but lapses with its lease: freed before (or just
            # after) the re-opening, it would let a worker that saw "half-open" call again.
            self._leave(permit.generation, State.HALF_OPEN, State.OPEN, f"probe failed: {reason}")
            return
        if self.snapshot().state is not State.CLOSED:
            return
        failures = self._count_failure(permit.generation)
        if failures >= self.config.failure_threshold:
            why = f"{failures} failures in {self.config.window}s; last: {reason}"
            self._leave(permit.generation, State.CLOSED, State.OPEN, why)

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call said nothing about the dependency's health."""
        if permit.slot is not None:
            self._release_probe(permit)

    # -- operators -----------------------------------------------------------------------
    def force(self, state: State | None, *, actor: User | None = None, reason: str = "") -> None:
        """Hold the breaker open or closed until cleared with ``force(None)``."""
        before = self.snapshot().state
        if state is None:
            cache.delete(self._key("forced"))
        elif state in (State.FORCED_OPEN, State.FORCED_CLOSED):
            cache.set(self._key("forced"), state.value, timeout=None)
        else:
            raise ValueError(f"can only force {State.FORCED_OPEN} or {State.FORCED_CLOSED}")
        after = self.snapshot().state
        BreakerTransition.objects.create(
            breaker=self.name,
            from_state=before,
            to_state=after,
            reason=reason or "forced",
            actor=actor,
        )

    def reset(self, *, actor: User | None = None, reason: str = "manual reset") -> None:
        """Close the breaker now, forgetting failures (an operator's manual reset)."""
        generation = self._generation()
        cache.delete(self._key("forced"))
        self._leave(generation, self.snapshot().state, State.CLOSED, reason, actor=actor)

    # -- internals -----------------------------------------------------------------------
    def _acquire_or_pass(self) -> Permit:
        """Return ``acquire()``'s permit, or an untracked one when the cache is unreachable."""
        try:
            return self.acquire()
        except _CACHE_DOWN as exc:
            logger.warning(
                "circuit %s: cache unreachable, calling as if closed (%s: %s)",
                self.name,
                type(exc).__name__,
                exc,
            )
            return Permit(generation=0, tracked=False)

    def _record_unless_cache_down(self, record: Callable[..., None], *args: object) -> None:
        """Run ``record(*args)``; with the cache unreachable, skip it with a warning."""
        try:
            record(*args)
        except _CACHE_DOWN as exc:
            logger.warning(
                "circuit %s: cache unreachable, outcome not recorded (%s: %s)",
                self.name,
                type(exc).__name__,
                exc,
            )

    def _key(self, suffix: str) -> str:
        return f"breaker:{self.name}:{suffix}"

    def _generation(self) -> int:
        key = self._key("gen")
        generation = cache.get(key)
        if generation is None:
            cache.add(key, 1, timeout=None)
            generation = cache.get(key, 1)
        return int(generation)

    def _count_failure(self, generation: int) -> int:
        now = int(time.time())
        window = self.config.window
        _incr(self._key(f"g{generation}:fail:{now}"), timeout=window + 1)
        buckets = [
            self._key(f"g{generation}:fail:{second}") for second in range(now - window + 1, now + 1)
        ]
        return sum(cache.get_many(buckets).values())

    def _leave(
        self, generation: int, before: State, after: State, reason: str, actor: User | None = None
    ) -> bool:
        """Move from ``generation`` to the next one, unless another worker already did."""
        if not cache.add(self._key(f"g{generation}:exit"), 1, timeout=_DAY):
            return False
        if after is State.OPEN:
            cache.set(self._key(f"g{generation + 1}:opened"), time.time(), timeout=_DAY)
        cache.set(self._key("gen"), generation + 1, timeout=None)
        _record_transition(
            breaker=self.name, from_state=before, to_state=after, reason=reason[:2000], actor=actor
        )
        logger.warning("circuit %s: %s -> %s (%s)", self.name, before, after, reason)
        return True

    def _lease_probe(self, generation: int) -> Permit | None:
        token = uuid.uuid4().hex
        for slot in range(self.config.half_open_max_calls):
            # The cache counts whole seconds (Redis drops a key whose timeout rounds to 0).
            lease = max(1, math.ceil(self.config.probe_lease))
            key = self._key(f"g{generation}:probe:{slot}")
            if cache.add(key, token, timeout=lease):
                if cache.get(self._key(f"g{generation}:exit")) is not None:
                    # The half-open generation ended (a probe failed, or enough succeeded)
                    # after this worker read it: another slot must not make a late call.
                    cache.delete(key)
                    return None
                return Permit(generation, slot, token)
        return None

    def _release_probe(self, permit: Permit) -> None:
        key = self._key(f"g{permit.generation}:probe:{permit.slot}")
        if cache.get(key) == permit.token:
            cache.delete(key)

    def _record_exception(self, permit: Permit, exc: Exception) -> None:
        if not permit.tracked:
            return
        classification = classify(exc)
        if classification.kind is ErrorKind.RATE_LIMITED:
            retry_after = classification.retry_after  # 0 is "now", not "unsaid"
            hold_cooldown(
                self.name, self.config.reset_timeout if retry_after is None else retry_after
            )
            self.release(permit)
        elif (
            classification.kind in NOT_THE_DEPENDENCYS_FAULT
            or classification.kind is ErrorKind.UNAVAILABLE
        ):
            self.release(permit)
        else:
            self.record_failure(permit, f"{type(exc).__name__}: {exc}"[:500])


def hold_cooldown(dependency: str, seconds: float) -> float:
    """Make every worker hold calls to ``dependency`` for ``seconds``; return the end time."""
    until = time.time() + seconds
    key = f"cooldown:{dependency}"
    with _locked(f"{key}:lock"):  # read, compare, write: one worker at a time
        current = cache.get(key)
        if current is None or current < until:
            cache.set(key, until, timeout=max(1, math.ceil(seconds) + 1))
    return max(until, current or 0)


@contextmanager
def _locked(key: str, wait: float = 2.0) -> Iterator[None]:
    """Hold a short cache lock (``add`` is ``SET NX``); a crashed holder's lock expires."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while not cache.add(key, token, timeout=1):
        if time.monotonic() > deadline:
            raise TimeoutError(f"cache lock {key} is held")
        time.sleep(0.002)
    try:
        yield
    finally:
        if cache.get(key) == token:
            cache.delete(key)


def _record_transition(**fields: object) -> None:
    if not connection.in_atomic_block:
        BreakerTransition.objects.create(**fields)
        return
    pending = getattr(_unwritten, "rows", None)
    if pending is None:
        pending = _unwritten.rows = []
    pending.append(fields)
    transaction.on_commit(write_pending_transitions)


def write_pending_transitions() -> None:
    """Write the transitions recorded inside a transaction that is now over, however it ended."""
    rows, _unwritten.rows = getattr(_unwritten, "rows", None) or [], []
    if rows and not connection.in_atomic_block:
        BreakerTransition.objects.bulk_create([BreakerTransition(**row) for row in rows])
    elif rows:
        _unwritten.rows = rows


def cooldown(dependency: str) -> float | None:
    """Return when the shared cooldown of ``dependency`` ends, if one is in force.

    With the cache unreachable, ``None`` (no known cooldown: fail open) and a warning.
    """
    try:
        until = cache.get(f"cooldown:{dependency}")
    except _CACHE_DOWN as exc:
        logger.warning(
            "cooldown of %s unknown, cache unreachable (%s: %s)",
            dependency,
            type(exc).__name__,
            exc,
        )
        return None
    return until if until is not None and until > time.time() else None


def _incr(key: str, *, timeout: float) -> int:
    cache.add(key, 0, timeout=timeout)
    return cache.incr(key)


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def retry_delay(retry_at: datetime | None, fallback: float) -> float:
    """Return seconds until ``retry_at`` (at least a tenth of a second), else ``fallback``."""
    if retry_at is None:
        return fallback
    return max(0.1, (retry_at - datetime.now(tz=UTC)) / timedelta(seconds=1))
