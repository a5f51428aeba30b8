"""Retry policies: how long each strategy waits and when it gives up (pure logic)."""

from __future__ import annotations

import pytest

from apps.resilience.policies import RetryPolicy, Strategy, policy_for
from apps.resilience.taxonomy import ErrorKind


@pytest.fixture(autouse=True)
def _unscaled(settings) -> None:
    settings.RESILIENCE_DELAY_SCALE = 1.0


def test_exponential_ceilings_double_up_to_the_cap_and_countdowns_are_jittered_below() -> None:
    policy = RetryPolicy(Strategy.EXPONENTIAL, max_attempts=10, base_delay=1, max_delay=60)
    assert [policy.ceiling(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    countdowns = {policy.countdown(5) for _ in range(200)}
    assert all(0 <= c <= 16 for c in countdowns)
    assert len(countdowns) > 100  # full jitter: spread, not one value


def test_linear_grows_by_the_base_and_fixed_stays() -> None:
    assert [RetryPolicy(Strategy.LINEAR, 3, 5, 12).countdown(n) for n in (1, 2, 3)] == [5, 10, 12]
    assert [RetryPolicy(Strategy.FIXED, 3, 2, 60).countdown(n) for n in (1, 2, 3)] == [2, 2, 2]


def test_retry_after_uses_the_servers_value_capped_and_falls_back_to_the_base() -> None:
    policy = RetryPolicy(Strategy.RETRY_AFTER, max_attempts=10, base_delay=30, max_delay=900)
    assert policy.countdown(1, retry_after=2) == 2
    assert policy.countdown(1, retry_after=5000) == 900
    assert policy.countdown(1) == 30


def test_attempts_are_bounded_unless_the_policy_spends_none() -> None:
    bounded = RetryPolicy(Strategy.EXPONENTIAL, max_attempts=5)
    assert [bounded.retries(n) for n in (1, 4, 5, 6)] == [True, True, False, False]
    assert RetryPolicy(Strategy.FIXED, spends_attempts=False).retries(1000)
    assert not RetryPolicy(Strategy.NONE).retries(1)


def test_the_delay_scale_shrinks_policy_delays_but_not_a_servers_retry_after(settings) -> None:
    settings.RESILIENCE_DELAY_SCALE = 0.01
    assert RetryPolicy(Strategy.LINEAR, 3, 5, 60).countdown(2) == pytest.approx(0.1)
    assert RetryPolicy(Strategy.RETRY_AFTER, 3, 30, 900).countdown(1, retry_after=2) == 2


@pytest.mark.parametrize(
    ("kind", "strategy", "max_attempts"),
    [
        (ErrorKind.TRANSIENT, Strategy.EXPONENTIAL, 5),
        (ErrorKind.TIMEOUT, Strategy.LINEAR, 3),
        (ErrorKind.RATE_LIMITED, Strategy.RETRY_AFTER, 10),
        (ErrorKind.VALIDATION, Strategy.NONE, 1),
        (ErrorKind.CORRUPTION, Strategy.NONE, 1),
    ],
)
def test_defaults_come_from_the_settings(
    kind: ErrorKind, strategy: Strategy, max_attempts: int
) -> None:
    policy = policy_for(kind)
    assert (policy.strategy, policy.max_attempts) == (strategy, max_attempts)


def test_a_handler_override_wins_over_the_default() -> None:
    mine = RetryPolicy(Strategy.FIXED, max_attempts=2, base_delay=0.1)
    assert policy_for(ErrorKind.TRANSIENT, {ErrorKind.TRANSIENT: mine}) is mine
    assert policy_for(ErrorKind.TIMEOUT, {ErrorKind.TRANSIENT: mine}).strategy is Strategy.LINEAR
