"""``@handles`` takes explicit keywords: a mistyped one fails when the module is imported."""

from __future__ import annotations

from typing import Any

import pytest

from apps.eventstore import subscriptions
from apps.eventstore.registry import DomainEvent, RecordedEvent, event
from apps.eventstore.subscriptions import handles, subscription
from apps.resilience.outcomes import _retry_overrides
from apps.resilience.policies import RetryPolicy, Strategy
from apps.resilience.taxonomy import ConfigurationError, ErrorKind


@event("test.subscription.checked")
class Checked(DomainEvent):
    """Nothing appends it: the handlers registered here never receive a message."""


@pytest.fixture(autouse=True)
def _forget_registrations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep this module's handlers out of the registry the other tests see."""
    monkeypatch.setattr(subscriptions, "_by_name", dict(subscriptions._by_name))


def _noop(recorded: RecordedEvent) -> None:
    return None


def test_a_mistyped_keyword_is_a_type_error() -> None:
    loose: Any = handles  # what mypy would reject, to check the runtime rejects it too
    with pytest.raises(TypeError, match="handle_eror"):
        loose(Checked, name="test.typo", handle_eror=print)


def test_a_hook_that_is_not_callable_is_a_type_error() -> None:
    loose: Any = handles
    with pytest.raises(TypeError, match="on_dead_letter"):
        loose(Checked, name="test.not-callable", on_dead_letter="notify")


def test_time_limits_are_the_publish_options() -> None:
    handles(Checked, name="test.limits", soft_time_limit=1, time_limit=2)(_noop)

    assert subscription("test.limits").publish_options() == {"soft_time_limit": 1, "time_limit": 2}


def test_the_runtime_reads_retry_policies_by_kind() -> None:
    fast = RetryPolicy(Strategy.FIXED, max_attempts=2, base_delay=0.1)
    handles(Checked, name="test.retry-ok", retry={ErrorKind.TRANSIENT: fast})(_noop)

    assert _retry_overrides(subscription("test.retry-ok")) == {ErrorKind.TRANSIENT: fast}


def test_a_retry_entry_that_is_no_kind_and_policy_is_a_configuration_error() -> None:
    handles(Checked, name="test.retry-typo", retry={"transiant": object()})(_noop)

    with pytest.raises(ConfigurationError, match="transiant"):
        _retry_overrides(subscription("test.retry-typo"))
