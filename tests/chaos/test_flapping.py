"""How the flapping-webhook scenario reads the breaker's generations back from Redis: a
generation entered by opening starts at the breaker's own ``opened`` time, so a failed
probe the sink logged just before its worker re-opened the breaker is not taken for a call
while open."""

from __future__ import annotations

import time
import uuid

import pytest
from django.conf import settings

from apps.resilience.breakers import CircuitBreaker, State
from tests.chaos.accounting import Report
from tests.chaos.scenarios.flapping_webhook import check_open_calls, generations
from tests.chaos.sink import Call, Mode

pytestmark = pytest.mark.django_db


def failed_call(at: float) -> Call:
    return Call(at=at, path="/hooks", key="k", event="e", body={}, mode=Mode.CLOSE, status=None)


def test_a_probe_logged_just_before_the_re_opening_belongs_to_the_half_open_generation() -> None:
    name = f"webhook:test-{uuid.uuid4().hex[:8]}"
    breaker = CircuitBreaker(name)
    assert breaker._leave(1, State.CLOSED, State.OPEN, "threshold reached")
    probe = failed_call(time.time())  # the sink logs it; its worker then re-opens
    assert breaker._leave(2, State.HALF_OPEN, State.OPEN, "probe failed")

    first, second, third = generations(settings.REDIS_URL, name)

    assert (first.opened, second.opened is not None, third.opened is not None) == (
        None,
        True,
        True,
    )
    assert first.end == second.start == second.opened
    assert second.end == third.start == third.opened
    assert second.start <= probe.at < second.end
    report = Report()
    check_open_calls(report, [first, second, third], [probe])
    assert report.problems == []
