"""Circuit breakers shared through Redis: atomic transitions across real processes, and
breakers, forced states and shared cooldowns seen by real workers calling a real server.

The concurrency tests fork separate processes (not threads). A forked child inherits the
test process's Django as configured: DJANGO_SETTINGS_MODULE set and django.setup() done, the
test database's name, the Redis db of this run and the test timings, as ``worker_env``
gives a worker. The parent closes its database connections before forking, so a child
opens its own (and closes it); Redis connection pools reset themselves in a new process.
A barrier and a common start time release the children at the same instant.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from django.db import connections

from apps.eventstore.registry import RecordedEvent
from apps.resilience.breakers import (
    BreakerConfig,
    CircuitBreaker,
    Permit,
    Snapshot,
    State,
    cooldown,
    hold_cooldown,
)
from apps.resilience.models import Attempt, BreakerTransition, Delivery
from apps.resilience.taxonomy import Unavailable
from tests.resilience.conftest import attempts, delivery, wait_for_status
from tests.resilience.handlers import effects
from tests.support.http import ControlledServer, Received, Reply, controlled_server
from tests.support.timings import TEST_TIMINGS
from tests.support.waiting import wait_until
from tests.support.worker import start_worker

pytestmark = pytest.mark.django_db(transaction=True)

HANDLER = "test.http-call"
PROCESSES = 8
THRESHOLD: int = TEST_TIMINGS["BREAKER_FAILURE_THRESHOLD"]
RESET_TIMEOUT: float = TEST_TIMINGS["BREAKER_RESET_TIMEOUT"]
MAX_PROBES: int = TEST_TIMINGS["BREAKER_HALF_OPEN_MAX_CALLS"]
SUCCESSES_TO_CLOSE: int = TEST_TIMINGS["BREAKER_SUCCESS_THRESHOLD"]
CLOCK_SLACK = 0.05
FORK = multiprocessing.get_context("fork")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


def transitions(breaker: str) -> list[tuple[str, str]]:
    rows = BreakerTransition.objects.filter(breaker=breaker).order_by("id")
    return list(rows.values_list("from_state", "to_state"))


def name_of(request: Received) -> str:
    return json.loads(request.body)["name"]


# -- separate processes ------------------------------------------------------------------


Start = Callable[[], None]


def _child(
    work: Callable[..., Any],
    barrier: Any,
    start_at: float,
    results: Any,
    index: int,
    args: tuple[Any, ...],
) -> None:
    """Body of a forked process: run ``work`` and report its value or its error."""

    def start() -> None:
        barrier.wait(timeout=10)  # every process is ready...
        while time.time() < start_at:  # ...and they all go at the same instant (a spin, so
            pass  # no process oversleeps the start)

    try:
        results.put((index, True, work(start, *args)))
    except BaseException as exc:
        results.put((index, False, f"{type(exc).__name__}: {exc}"))
    finally:
        connections.close_all()


def in_processes(work: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``work(start, *args)`` for each ``args`` of ``calls``, each in a forked process of
    its own; return their values in order.

    ``work`` calls ``start()`` when it is ready to act: it returns in every process at once.
    """
    count = len(calls)
    connections.close_all()  # a child must never talk on the parent's database connection
    barrier = FORK.Barrier(count)
    start_at = time.time() + 0.3
    results = FORK.Queue()
    processes = [
        FORK.Process(target=_child, args=(work, barrier, start_at, results, index, args))
        for index, args in enumerate(calls)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = sorted(
            (results.get(timeout=30) for _ in processes), key=lambda outcome: outcome[0]
        )
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    errors = [value for _, ok, value in outcomes if not ok]
    assert not errors, errors
    assert [process.exitcode for process in processes] == [0] * count
    return [value for _, _, value in outcomes]


def _fail_on_closed(start: Start, name: str) -> int:
    breaker = CircuitBreaker(name)
    permit = breaker.acquire()
    start()
    breaker.record_failure(permit, "connection reset")
    return permit.generation


def _acquire(start: Start, name: str, config: BreakerConfig) -> Permit | str:
    breaker = CircuitBreaker(name, config)
    breaker.snapshot()  # connected to Redis before the start, so all calls come at once
    start()
    try:
        return breaker.acquire()
    except Unavailable as exc:
        return f"unavailable: {exc}"


def _probe(start: Start, name: str, config: BreakerConfig, succeed: bool) -> int | None:
    breaker = CircuitBreaker(name, config)
    permit = breaker.acquire()
    start()
    if succeed:
        breaker.record_success(permit)
    else:
        breaker.record_failure(permit, "probe got a 503")
    return permit.slot


def _take_probe_and_die(start: Start, name: str, config: BreakerConfig) -> float:
    """Lease a probe slot and exit without releasing it, like a prober that crashed."""
    start()
    CircuitBreaker(name, config).acquire()
    return time.time()


def _hold_cooldown(start: Start, name: str, seconds: float) -> float:
    cooldown(name)  # connected to Redis before the start, so all calls come at once
    start()
    return hold_cooldown(name, seconds)


def open_until_half_open(breaker: CircuitBreaker) -> None:
    """Open ``breaker`` with threshold failures, then wait for its reset timeout to pass."""
    for _ in range(breaker.config.failure_threshold):
        breaker.record_failure(breaker.acquire(), "connection reset")
    assert breaker.snapshot().state is State.OPEN
    wait_until(
        lambda: breaker.snapshot().state is State.HALF_OPEN,
        timeout=breaker.config.reset_timeout + 5,
        message=f"{breaker.name} to half-open",
    )


def try_acquire(breaker: CircuitBreaker) -> Permit | None:
    try:
        return breaker.acquire()
    except Unavailable:
        return None


def test_concurrent_failures_in_eight_processes_open_the_breaker_exactly_once() -> None:
    name = unique("test-dep")

    generations = in_processes(_fail_on_closed, [(name,)] * PROCESSES)

    assert generations == [1] * PROCESSES  # every call was let through while closed
    assert transitions(name) == [("closed", "open")]
    reason = BreakerTransition.objects.get(breaker=name).reason
    assert "failures in" in reason
    assert "connection reset" in reason
    snapshot = CircuitBreaker(name).snapshot()
    assert (snapshot.state, snapshot.generation) == (State.OPEN, 2)


def test_half_open_admits_only_max_calls_concurrent_probes_and_two_successes_close_it() -> None:
    breaker = CircuitBreaker(unique("test-dep"))
    open_until_half_open(breaker)

    for probe in range(SUCCESSES_TO_CLOSE):
        results = in_processes(_acquire, [(breaker.name, breaker.config)] * PROCESSES)

        permits = [r for r in results if isinstance(r, Permit)]
        refused = [r for r in results if isinstance(r, str)]
        assert len(permits) == MAX_PROBES
        assert len(refused) == PROCESSES - MAX_PROBES
        assert all("half-open and its probes are taken" in r for r in refused)
        assert try_acquire(breaker) is None  # the slot stays taken until the probe reports
        assert breaker.snapshot().state is State.HALF_OPEN
        assert transitions(breaker.name) == [("closed", "open")]

        for permit in permits:
            breaker.record_success(permit)
        if probe < SUCCESSES_TO_CLOSE - 1:
            assert breaker.snapshot().state is State.HALF_OPEN

    assert breaker.snapshot().state is State.CLOSED
    assert transitions(breaker.name) == [("closed", "open"), ("half_open", "closed")]


def test_concurrent_successful_probes_close_the_breaker_exactly_once() -> None:
    config = replace(BreakerConfig.from_settings(), half_open_max_calls=PROCESSES)
    breaker = CircuitBreaker(unique("test-dep"), config)
    open_until_half_open(breaker)

    slots = in_processes(_probe, [(breaker.name, config, True)] * PROCESSES)

    assert sorted(slots) == list(range(PROCESSES))  # every process had a slot of its own
    assert breaker.snapshot().state is State.CLOSED
    assert transitions(breaker.name) == [("closed", "open"), ("half_open", "closed")]


def test_concurrent_failing_probes_reopen_the_breaker_exactly_once() -> None:
    config = replace(BreakerConfig.from_settings(), half_open_max_calls=PROCESSES)
    breaker = CircuitBreaker(unique("test-dep"), config)
    open_until_half_open(breaker)

    in_processes(_probe, [(breaker.name, config, False)] * PROCESSES)

    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.generation) == (State.OPEN, 3)
    assert transitions(breaker.name) == [("closed", "open"), ("half_open", "open")]


def test_a_probe_slot_of_a_dead_process_is_freed_when_its_lease_expires() -> None:
    config = replace(BreakerConfig.from_settings(), probe_lease=1.0)
    breaker = CircuitBreaker(unique("test-dep"), config)
    open_until_half_open(breaker)

    [leased_at] = in_processes(_take_probe_and_die, [(breaker.name, config)])

    assert try_acquire(breaker) is None
    permit = wait_until(lambda: try_acquire(breaker), timeout=5, message="the lease to expire")
    assert time.time() - leased_at >= config.probe_lease - 0.1
    assert permit.slot == 0
    assert breaker.snapshot().state is State.HALF_OPEN


def test_a_sub_second_probe_lease_still_limits_concurrent_probes() -> None:
    """BREAKER_PROBE_LEASE_SECONDS is a float setting: half a second must still be a lease."""
    config = replace(BreakerConfig.from_settings(), probe_lease=0.5)
    breaker = CircuitBreaker(unique("test-dep"), config)
    open_until_half_open(breaker)

    results = in_processes(_acquire, [(breaker.name, config)] * PROCESSES)

    assert len([r for r in results if isinstance(r, Permit)]) == MAX_PROBES


def test_concurrent_cooldowns_from_eight_processes_keep_the_longest() -> None:
    """Eight workers told to wait 1..8 s at once: every worker must wait the longest, 8 s."""
    for _ in range(10):  # a lost update shows in some rounds, not necessarily in each
        name = unique("test-dep")
        started = time.time()

        ends = in_processes(_hold_cooldown, [(name, 1.0 + i) for i in range(PROCESSES)])

        held_until = cooldown(name)
        assert max(ends) >= started + PROCESSES
        assert held_until is not None
        assert held_until >= started + PROCESSES, f"held {held_until - started:.2f}s, not 8s"


# -- real workers and a real server ------------------------------------------------------


def open_snapshot(name: str) -> Snapshot | None:
    snapshot = CircuitBreaker(name).snapshot()
    return snapshot if snapshot.state is State.OPEN else None


def defers(recorded: RecordedEvent) -> list[Attempt]:
    return [a for a in attempts(HANDLER, recorded) if a.outcome == Attempt.Outcome.DEFER]


def requests_of(server: ControlledServer) -> dict[str, list[Received]]:
    by_name: dict[str, list[Received]] = {}
    for request in list(server.received):
        by_name.setdefault(name_of(request), []).append(request)
    return by_name


def test_failing_jobs_on_two_workers_open_the_breaker_then_probes_close_it(
    job, tmp_path: Path
) -> None:
    breaker, prefix = unique("test-dep"), unique("herd")
    in_flight = 0.5  # a call let through just before the breaker opened may still land
    probe_time = 0.3  # each 200 takes this long, so overlapping probes would show
    second_worker = start_worker(tmp_path)  # four worker processes in all
    try:
        with controlled_server() as server:
            server.default = Reply(503)
            url = server.url + "/x"
            first = {
                f"{prefix}-{i}": job(f"{prefix}-{i}", url=url, breaker=breaker) for i in range(4)
            }
            opened = wait_until(
                lambda: open_snapshot(breaker), timeout=15, interval=0.02, message="to open"
            )
            assert opened.retry_at is not None
            half_open_at = opened.retry_at.timestamp()
            opened_at = half_open_at - RESET_TIMEOUT
            # The dependency recovers while the breaker is open: the probes will succeed.
            server.default = Reply(200, delay=probe_time)
            switched_at = time.time()
            assert switched_at < half_open_at

            later = {
                f"{prefix}-late-{i}": job(f"{prefix}-late-{i}", url=url, breaker=breaker)
                for i in range(2)
            }

            jobs = {**first, **later}
            for recorded in jobs.values():
                wait_for_status(HANDLER, recorded, Delivery.Status.SUCCEEDED, timeout=20)
            received = list(server.received)
            by_name = requests_of(server)
    finally:
        second_worker.stop()

    # Closed: at least the threshold of failures reached the server, from the first jobs.
    before_open = [r for r in received if r.at < opened_at]
    assert len(before_open) >= THRESHOLD
    assert {name_of(r) for r in before_open} <= set(first)
    # Open: nothing reaches the server (but calls already on their way when it opened).
    landing = [r for r in received if opened_at <= r.at <= opened_at + in_flight]
    assert len(landing) < 4
    assert [r for r in received if opened_at + in_flight < r.at < half_open_at] == []
    # Later jobs were deferred without spending an attempt, and never called while open.
    for name, recorded in later.items():
        log = attempts(HANDLER, recorded)
        assert log, f"{name} was not deferred"
        assert {(a.number, a.kind, a.outcome) for a in log} == {(0, "unavailable", "defer")}
        assert delivery(HANDLER, recorded).attempts == 0
        assert all(r.at >= half_open_at for r in by_name[name])
    # Half-open: one probe at a time; jobs that came meanwhile were turned away.
    closing = BreakerTransition.objects.get(
        breaker=breaker, from_state="half_open", to_state="closed"
    )
    closed_at = closing.at.timestamp()
    probes = [r for r in received if half_open_at <= r.at < closed_at]
    assert len(probes) == SUCCESSES_TO_CLOSE
    assert all(b.at - a.at >= probe_time for a, b in itertools.pairwise(probes))
    turned_away = Attempt.objects.filter(
        delivery__handler=HANDLER,
        delivery__event_id__in=[r.event_id for r in jobs.values()],
        message__contains="half-open and its probes are taken",
    )
    assert turned_away.exists()
    # Every job delivered exactly once: one effect, one 200 from the server.
    for name in jobs:
        assert effects(HANDLER, name) == 1, name
        assert len([r for r in by_name[name] if r.at > switched_at]) == 1, name
    # Each 503 the server gave is one transient attempt, spent by the job that got it.
    transient = Attempt.objects.filter(
        delivery__handler=HANDLER,
        delivery__event_id__in=[r.event_id for r in first.values()],
        kind="transient",
        outcome="retry",
    )
    assert transient.count() == len([r for r in received if r.at < switched_at])
    for recorded in first.values():
        spent = [a.number for a in attempts(HANDLER, recorded) if a.kind == "transient"]
        assert spent == list(range(1, len(spent) + 1))
        assert delivery(HANDLER, recorded).attempts == len(spent)
    assert CircuitBreaker(breaker).snapshot().state is State.CLOSED
    assert transitions(breaker) == [("closed", "open"), ("half_open", "closed")]


def test_a_forced_open_breaker_defers_jobs_past_the_reset_timeout_until_cleared(job) -> None:
    breaker, prefix = unique("test-dep"), unique("forced")
    CircuitBreaker(breaker).force(State.FORCED_OPEN, reason="maintenance window")
    with controlled_server() as server:
        jobs = {
            f"{prefix}-{i}": job(f"{prefix}-{i}", url=server.url + "/x", breaker=breaker)
            for i in range(2)
        }
        # A second deferral of a job comes a reset timeout after its first.
        wait_until(
            lambda: all(len(defers(r)) >= 2 for r in jobs.values()),
            timeout=10,
            message="every job to be deferred twice",
        )
        assert server.count() == 0
        assert CircuitBreaker(breaker).snapshot().state is State.FORCED_OPEN

        cleared_at = time.time()
        CircuitBreaker(breaker).force(None)
        for recorded in jobs.values():
            wait_for_status(HANDLER, recorded, Delivery.Status.SUCCEEDED, timeout=10)
        by_name = requests_of(server)

    for name, recorded in jobs.items():
        log = attempts(HANDLER, recorded)
        assert {(a.number, a.kind, a.outcome) for a in log} == {(0, "unavailable", "defer")}
        # the second deferral came when the first one's countdown (a reset timeout) was over
        assert log[0].countdown == pytest.approx(RESET_TIMEOUT, abs=0.1)
        assert (log[1].at - log[0].at).total_seconds() >= log[0].countdown - CLOCK_SLACK
        assert all("forced_open" in a.message for a in log)
        assert delivery(HANDLER, recorded).attempts == 0
        assert [r.at >= cleared_at for r in by_name[name]] == [True]
        assert effects(HANDLER, name) == 1
    assert transitions(breaker) == [("closed", "forced_open"), ("forced_open", "closed")]


def test_a_429_retry_after_holds_every_workers_calls_to_the_same_dependency(job) -> None:
    breaker, name_a, name_b = unique("test-dep"), unique("limited"), unique("held")
    with controlled_server() as server:
        server.then(Reply(429, {"Retry-After": "2"}))
        job_a = job(name_a, url=server.url + "/x", breaker=breaker)
        wait_until(lambda: attempts(HANDLER, job_a), message="job A to be rate limited")
        # The cooldown is in the shared cache: this process sees it too.
        until = cooldown(breaker)
        assert until is not None
        with pytest.raises(Unavailable):
            CircuitBreaker(breaker).acquire()

        job_b = job(name_b, url=server.url + "/x", breaker=breaker)
        for recorded in (job_a, job_b):
            wait_for_status(HANDLER, recorded, Delivery.Status.SUCCEEDED, timeout=20)
        by_name = requests_of(server)

    [first_a] = attempts(HANDLER, job_a)
    assert (first_a.kind, first_a.outcome, first_a.countdown) == (
        "rate_limited",
        "retry",
        pytest.approx(2.0),
    )
    log_b = attempts(HANDLER, job_b)
    assert log_b
    assert {(a.number, a.kind, a.outcome) for a in log_b} == {(0, "unavailable", "defer")}
    assert 0 < log_b[0].countdown <= 2.0
    assert delivery(HANDLER, job_b).attempts == 0
    a_calls, b_calls = by_name[name_a], by_name[name_b]
    assert len(a_calls) == 2
    assert len(b_calls) == 1
    assert until - a_calls[0].at == pytest.approx(2.0, abs=0.5)
    assert b_calls[0].at >= until - CLOCK_SLACK
    assert b_calls[0].at - a_calls[0].at >= 2.0 - CLOCK_SLACK
    assert a_calls[1].at - a_calls[0].at >= 2.0 - CLOCK_SLACK
    assert effects(HANDLER, name_a) == effects(HANDLER, name_b) == 1
    assert transitions(breaker) == []  # a rate limit is a request to wait, not a failure
