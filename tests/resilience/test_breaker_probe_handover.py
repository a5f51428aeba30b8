"""A probe's report hands its slot on only when that can't let an extra call through: a
failed half-open probe re-opens the breaker with its slot still taken (it lapses with its
lease), and a closing one closes before it gives its slot back. Found by the chaos scenario
"flapping-webhook", which counts the calls a breaker lets through while not closed.

Two breaker objects on one name share their state through the cache, as two workers do;
the races run deterministically, the other worker acting right after each cache write of
the report or right before its own lease (``RunBefore``/``RunAfter`` style), not by sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import pytest
from django.core.cache import caches

from apps.resilience.breakers import CircuitBreaker, Permit, State
from apps.resilience.taxonomy import Unavailable
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def half_open_breaker() -> CircuitBreaker:
    """Return a new breaker opened by threshold failures, now half-open."""
    breaker = CircuitBreaker(f"test-dep-{uuid4().hex[:8]}")
    for _ in range(breaker.config.failure_threshold):
        breaker.record_failure(breaker.acquire(), "connection reset")
    wait_until(
        lambda: breaker.snapshot().state is State.HALF_OPEN,
        timeout=breaker.config.reset_timeout + 5,
        message=f"{breaker.name} to half-open",
    )
    return breaker


def try_acquire(breaker: CircuitBreaker) -> Permit | None:
    try:
        return breaker.acquire()
    except Unavailable:
        return None


@contextmanager
def acquiring_after_each_write(
    other: CircuitBreaker, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[tuple[State, Permit]]]:
    """Within the block, ``other`` tries to acquire right after each cache write; yield the
    permits it got, each with the state it saw just before."""
    admitted: list[tuple[State, Permit]] = []
    busy = False

    def after(write: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal busy
            result = write(*args, **kwargs)
            if not busy:  # the other worker's own writes don't start another attempt
                busy = True
                try:
                    state = other.snapshot().state
                    if (permit := try_acquire(other)) is not None:
                        admitted.append((state, permit))
                finally:
                    busy = False
            return result

        return run

    backend = caches["default"]
    with monkeypatch.context() as patched:
        for name in ("add", "set", "delete", "incr"):
            patched.setattr(backend, name, after(getattr(backend, name)))
        yield admitted


def test_no_worker_gets_a_permit_at_any_step_of_a_failed_probes_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prober = half_open_breaker()
    probe = prober.acquire()
    assert probe.slot is not None

    with acquiring_after_each_write(CircuitBreaker(prober.name), monkeypatch) as admitted:
        prober.record_failure(probe, "probe got a 503")

    assert admitted == []
    assert prober.snapshot().state is State.OPEN


@pytest.mark.parametrize("slots", [1, 2], ids=["one-probe-slot", "a-second-slot-free"])
def test_a_worker_that_saw_half_open_gets_no_slot_once_the_probe_failed(
    monkeypatch: pytest.MonkeyPatch, settings: Any, slots: int
) -> None:
    settings.BREAKER_HALF_OPEN_MAX_CALLS = slots
    prober = half_open_breaker()
    other = CircuitBreaker(prober.name)
    assert other.config.half_open_max_calls == slots
    probe = prober.acquire()
    lease = other._lease_probe

    def probe_fails_first(generation: int) -> Permit | None:
        # The other worker read "half-open"; the probe reports its failure before it leases
        # (with two slots, the second is free: the ended generation must refuse it too).
        prober.record_failure(probe, "probe got a 503")
        return lease(generation)

    monkeypatch.setattr(other, "_lease_probe", probe_fails_first)

    with pytest.raises(Unavailable, match="probes are taken"):
        other.acquire()
    assert prober.snapshot().state is State.OPEN


def test_the_closing_probe_hands_its_slot_on_only_once_the_breaker_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prober = half_open_breaker()
    for _ in range(prober.config.success_threshold - 1):
        prober.record_success(prober.acquire())
    closing = prober.acquire()
    assert closing.slot is not None

    with acquiring_after_each_write(CircuitBreaker(prober.name), monkeypatch) as admitted:
        prober.record_success(closing)

    assert prober.snapshot().state is State.CLOSED
    assert admitted  # the other worker got through as soon as the breaker closed...
    assert all(state is State.CLOSED and p.slot is None for state, p in admitted)  # ...not before


def test_a_successful_probe_still_hands_its_slot_to_the_next_probe() -> None:
    prober = half_open_breaker()
    other = CircuitBreaker(prober.name)
    probe = prober.acquire()
    assert try_acquire(other) is None  # one probe at a time

    prober.record_success(probe)

    assert prober.config.success_threshold > 1  # not closed yet: the next probe's turn
    assert prober.snapshot().state is State.HALF_OPEN
    assert try_acquire(other) is not None
