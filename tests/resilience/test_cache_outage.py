"""Redis down doesn't take Backstop down: the API answers, breakers let calls through.

The cache is pointed at a Redis that isn't there (a port nothing listens on); Django
rebuilds its cache connections when ``CACHES`` changes. The broker stays up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.test import override_settings

from apps.api import throttles
from apps.resilience.breakers import CircuitBreaker, State, cooldown, hold_cooldown
from apps.resilience.models import BreakerTransition
from tests.support.api import Api
from tests.support.broker import free_port

pytestmark = pytest.mark.django_db


def dead_cache() -> dict[str, Any]:
    """Return ``CACHES`` pointing at a Redis that doesn't answer."""
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }


@pytest.fixture
def cache_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run the test with the cache down (and let the throttle's first warning through)."""
    monkeypatch.setattr(throttles._cache_down_warning, "next_at", 0.0)
    with override_settings(CACHES=dead_cache()):
        yield


def _status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://hooks.example.test/x")
    response = httpx.Response(status, headers={"Retry-After": "30"}, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


def fail_after_the_cache_went_down(breaker: CircuitBreaker, failure: Exception) -> None:
    """Make a guarded call that raises ``failure`` once the cache, up at its start, is down."""
    outage = override_settings(CACHES=dead_cache())
    try:
        with breaker.guard() as permit:
            assert permit.tracked
            outage.enable()
            raise failure
    finally:
        outage.disable()


# -- the API ----------------------------------------------------------------------------


@pytest.mark.usefixtures("cache_down")
def test_the_api_lists_and_creates_todos_with_the_cache_down(
    alice: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        listed = alice.get("todos/")
        created = alice.post("todos/", {"title": "Water the plants"})

    assert listed.status_code == 200, listed.content[:300]
    assert created.status_code == 201, created.content[:300]
    assert created.json()["title"] == "Water the plants"
    assert "throttle user: cache unreachable, requests pass unthrottled" in caplog.text


# -- circuit breakers -------------------------------------------------------------------


@pytest.mark.usefixtures("cache_down")
def test_a_guarded_call_runs_when_the_cache_is_down(caplog: pytest.LogCaptureFixture) -> None:
    permits = []

    with caplog.at_level(logging.WARNING), CircuitBreaker("outage:ok").guard() as permit:
        permits.append(permit)

    assert len(permits) == 1
    assert not permits[0].tracked
    assert "circuit outage:ok: cache unreachable, calling as if closed" in caplog.text


@pytest.mark.usefixtures("cache_down")
@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ConnectError("refused"), id="transient"),
        pytest.param(_status_error(429), id="rate-limited"),  # would hold a shared cooldown
        pytest.param(ValueError("a rule"), id="business-rule"),
    ],
)
def test_a_guarded_call_fails_with_its_own_error_when_the_cache_is_down(
    failure: Exception,
) -> None:
    with pytest.raises(type(failure)) as raised, CircuitBreaker("outage:fails").guard():
        raise failure

    assert raised.value is failure


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ConnectError("refused"), id="transient"),
        pytest.param(_status_error(429), id="rate-limited"),
    ],
)
def test_recording_is_skipped_when_the_cache_goes_down_during_the_call(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(type(failure)) as raised:
        fail_after_the_cache_went_down(CircuitBreaker("outage:mid-call"), failure)

    assert raised.value is failure
    assert "circuit outage:mid-call: cache unreachable, outcome not recorded" in caplog.text


@pytest.mark.usefixtures("cache_down")
def test_the_shared_cooldown_check_fails_open_when_the_cache_is_down() -> None:
    assert cooldown("outage:cooling") is None


def test_a_cooldown_held_before_the_outage_holds_again_after_it() -> None:
    until = hold_cooldown("outage:held", 30)

    with override_settings(CACHES=dead_cache()):
        during = cooldown("outage:held")

    assert during is None
    assert cooldown("outage:held") == until


def test_failures_during_an_outage_leave_the_breaker_as_it_was() -> None:
    name = "outage:after"
    with override_settings(CACHES=dead_cache()):
        for _ in range(5):  # more than the failure threshold
            with pytest.raises(httpx.ConnectError), CircuitBreaker(name).guard():
                raise httpx.ConnectError("refused")

    assert CircuitBreaker(name).snapshot().state is State.CLOSED
    assert not BreakerTransition.objects.filter(breaker=name).exists()
