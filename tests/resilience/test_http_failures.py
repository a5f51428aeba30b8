"""HTTP failures of a real dependency, through a real worker and a real local server.

Each test scripts what the server answers, requests one ``test.http-call`` job (a POST
through the job's own circuit breaker) and then checks the recorded deliveries, attempts,
dead letters and breaker transitions against what the server actually received.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from uuid import uuid4

import pytest

from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import BreakerTransition, Delivery
from tests.resilience.conftest import attempts, dead_letter, wait_for_status
from tests.resilience.handlers import effects
from tests.support.http import ControlledServer, Reply, controlled_server
from tests.support.timings import TEST_TIMINGS

pytestmark = pytest.mark.django_db(transaction=True)

HANDLER = "test.http-call"
SCALE: float = TEST_TIMINGS["RESILIENCE_DELAY_SCALE"]
RESET_TIMEOUT: float = TEST_TIMINGS["BREAKER_RESET_TIMEOUT"]
# Clock reading and rounding between the server thread, the worker and Celery's timer.
CLOCK_SLACK = 0.05


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:8]}"


def names_received(server: ControlledServer) -> list[str]:
    return [json.loads(request.body)["name"] for request in list(server.received)]


def transitions(breaker: str) -> list[tuple[str, str]]:
    rows = BreakerTransition.objects.filter(breaker=breaker).order_by("id")
    return list(rows.values_list("from_state", "to_state"))


def test_503_three_times_opens_the_breaker_then_a_half_open_probe_delivers_once(job) -> None:
    breaker, name = unique("test-dep"), unique("flaky")
    with controlled_server() as server:
        server.then(Reply(503), Reply(503), Reply(503))  # then the default 200
        recorded = job(name, url=server.url + "/x", breaker=breaker)

        found = wait_for_status(HANDLER, recorded, Delivery.Status.SUCCEEDED, timeout=20)
        received = list(server.received)

    assert effects(HANDLER, name) == 1
    assert len(received) == 4
    assert names_received(server) == [name] * 4
    log = attempts(HANDLER, recorded)
    transient, deferred = log[:3], log[3:]
    assert [(a.number, a.kind, a.outcome) for a in transient] == [
        (1, "transient", "retry"), (2, "transient", "retry"), (3, "transient", "retry"),
    ]  # fmt: skip
    assert all(a.exception_type == "HTTPStatusError" for a in transient)
    # exponential full jitter: ceilings double, each countdown at most its ceiling
    assert [a.ceiling for a in transient] == pytest.approx([1 * SCALE, 2 * SCALE, 4 * SCALE])
    assert all(0 <= a.countdown <= a.ceiling for a in transient)
    # The third failure opened the breaker (threshold 3): the next run was deferred until
    # the breaker half-opened, without spending an attempt and without calling the server.
    assert deferred, "the run after the breaker opened should have been deferred"
    assert {(a.number, a.kind, a.outcome) for a in deferred} == {(3, "unavailable", "defer")}
    assert all(0 < a.countdown <= RESET_TIMEOUT + CLOCK_SLACK for a in deferred)
    assert found.attempts == 3
    # The successful call was the half-open probe: it came a reset timeout after the last 503.
    assert received[3].at - received[2].at >= RESET_TIMEOUT - CLOCK_SLACK
    # One successful probe of the two it takes (success_threshold 2): still half-open.
    assert CircuitBreaker(breaker).snapshot().state is State.HALF_OPEN
    # ...and the opening is on record for operators.
    assert transitions(breaker) == [("closed", "open")]


def test_429_retry_after_seconds_sets_the_unscaled_countdown_and_is_honoured(job) -> None:
    breaker, name = unique("test-dep"), unique("limited")
    with controlled_server() as server:
        server.then(Reply(429, {"Retry-After": "2"}))
        recorded = job(name, url=server.url + "/x", breaker=breaker)

        wait_for_status(HANDLER, recorded, Delivery.Status.SUCCEEDED, timeout=20)
        received = list(server.received)

    [first] = attempts(HANDLER, recorded)
    assert (first.number, first.kind, first.outcome) == (1, "rate_limited", "retry")
    # The server's Retry-After is taken as is: RESILIENCE_DELAY_SCALE does not shrink it.
    assert first.countdown == pytest.approx(2.0)
    assert first.ceiling == pytest.approx(2.0)
    assert len(received) == 2
    assert 2.0 - CLOCK_SLACK <= received[1].at - received[0].at < 2.0 + 3.0
    assert effects(HANDLER, name) == 1
    assert transitions(breaker) == []  # being asked to slow down is not a failure


def test_429_retry_after_as_an_http_date_is_honoured(job) -> None:
    breaker, name = unique("test-dep"), unique("limited-date")
    header = format_datetime(datetime.now(tz=UTC) + timedelta(seconds=2), usegmt=True)
    not_before = parsedate_to_datetime(header).timestamp()  # whole seconds: 1 to 2 s away
    with controlled_server() as server:
        server.then(Reply(429, {"Retry-After": header}))
        recorded = job(name, url=server.url + "/x", breaker=breaker)

        wait_for_status(HANDLER, recorded, Delivery.Status.SUCCEEDED, timeout=20)
        received = list(server.received)

    [first] = attempts(HANDLER, recorded)
    assert (first.number, first.kind, first.outcome) == (1, "rate_limited", "retry")
    assert 0 < first.countdown <= 3.0
    assert len(received) == 2
    assert received[0].at < not_before
    assert received[1].at >= not_before - CLOCK_SLACK
    assert received[1].at - received[0].at >= first.countdown - CLOCK_SLACK
    assert effects(HANDLER, name) == 1


def test_429_retry_after_as_an_asctime_http_date_is_honoured(job) -> None:
    """RFC 9110 5.6.7: recipients must accept the obsolete asctime form of an HTTP-date,
    which names no zone (it is GMT) and parses to a naive datetime."""
    breaker, name = unique("test-dep"), unique("limited-asctime")
    header = time.asctime(time.gmtime(time.time() + 2))
    not_before = parsedate_to_datetime(header).replace(tzinfo=UTC).timestamp()
    with controlled_server() as server:
        server.then(Reply(429, {"Retry-After": header}))
        recorded = job(name, url=server.url + "/x", breaker=breaker)

        found = wait_for_status(
            HANDLER, recorded, Delivery.Status.SUCCEEDED, Delivery.Status.DEAD_LETTERED
        )
        received = list(server.received)

    assert (found.status, found.last_error) == (Delivery.Status.SUCCEEDED, "")
    [first] = attempts(HANDLER, recorded)
    assert (first.kind, first.outcome) == ("rate_limited", "retry")
    assert 0 < first.countdown <= 3.0
    assert len(received) == 2
    assert received[1].at >= not_before - CLOCK_SLACK
    assert effects(HANDLER, name) == 1


def test_429_retry_after_zero_is_retried_at_once_without_a_cooldown(job) -> None:
    """``Retry-After: 0`` means "try again now"; it must not be read as "no Retry-After"."""
    breaker, name = unique("test-dep"), unique("limited-zero")
    with controlled_server() as server:
        server.then(Reply(429, {"Retry-After": "0"}))
        recorded = job(name, url=server.url + "/x", breaker=breaker)

        wait_for_status(HANDLER, recorded, Delivery.Status.SUCCEEDED, timeout=20)
        received = list(server.received)

    log = attempts(HANDLER, recorded)
    assert [(a.number, a.kind, a.outcome, a.countdown) for a in log] == [
        (1, "rate_limited", "retry", 0.0)
    ]
    assert len(received) == 2
    # Much sooner than a breaker reset timeout (the fallback cooldown when none was given).
    assert received[1].at - received[0].at < RESET_TIMEOUT / 2
    assert effects(HANDLER, name) == 1


def test_400_is_dead_lettered_as_validation_after_exactly_one_request(job) -> None:
    breaker, name = unique("test-dep"), unique("rejected")
    with controlled_server() as server:
        server.then(Reply(400))
        recorded = job(name, url=server.url + "/x", breaker=breaker)

        found = wait_for_status(HANDLER, recorded, Delivery.Status.DEAD_LETTERED, timeout=20)
        received = names_received(server)

    assert received == [name]
    assert [(a.number, a.kind, a.outcome) for a in attempts(HANDLER, recorded)] == [
        (1, "validation", "dead_letter")
    ]
    assert (found.attempts, found.next_attempt_at) == (1, None)
    letter = dead_letter(HANDLER, recorded)
    assert (letter.kind, letter.attempts, letter.next_retry_at) == ("validation", 1, None)
    assert "400" in letter.message
    assert effects(HANDLER, name) == 0
    # A rejected request says nothing about the dependency's health.
    assert transitions(breaker) == []
    assert CircuitBreaker(breaker).snapshot().state is State.CLOSED


def test_a_server_hanging_past_the_client_timeout_is_a_timeout_attempt(job) -> None:
    breaker, name = unique("test-dep"), unique("hanging")
    with controlled_server() as server:
        server.then(Reply(200, delay=3))  # the client gives up after 2 s
        recorded = job(name, url=server.url + "/x", breaker=breaker)

        found = wait_for_status(HANDLER, recorded, Delivery.Status.SUCCEEDED, timeout=20)
        received = list(server.received)

    [first] = attempts(HANDLER, recorded)
    assert (first.number, first.kind, first.outcome) == (1, "timeout", "retry")
    assert first.exception_type == "ReadTimeout"
    assert first.countdown == pytest.approx(5 * SCALE)  # linear: base 5 s, scaled
    assert found.attempts == 1
    assert len(received) == 2
    assert received[1].at - received[0].at >= 2.0 - CLOCK_SLACK
    assert effects(HANDLER, name) == 1
    assert transitions(breaker) == []  # one failure of the three it takes to open
