"""Each error kind follows its retry policy on a real worker: attempts, countdowns, outcome."""

from __future__ import annotations

import pytest

from apps.resilience.models import DeadLetter, Delivery
from tests.resilience.conftest import attempts, dead_letter, wait_for_status
from tests.resilience.handlers import effects, script
from tests.support.timings import TEST_TIMINGS
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
SCALE = TEST_TIMINGS["RESILIENCE_DELAY_SCALE"]
DONE = (Delivery.Status.SUCCEEDED, Delivery.Status.DEAD_LETTERED)


def test_a_transient_failure_is_retried_with_growing_jittered_backoff_then_succeeds(job) -> None:
    script("flaky", "transient", "db", "transient")
    recorded = job("flaky")

    wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)

    log = attempts("test.scripted", recorded)
    assert [(a.number, a.kind, a.outcome) for a in log] == [
        (1, "transient", "retry"),
        (2, "transient", "retry"),
        (3, "transient", "retry"),
    ]
    # exponential: ceilings base * 2**(n-1) (base 1 s, scaled), countdowns jittered below them
    assert [a.ceiling for a in log] == pytest.approx([1 * SCALE, 2 * SCALE, 4 * SCALE])
    assert all(0 <= a.countdown <= a.ceiling for a in log)
    assert effects("test.scripted", "flaky") == 1


def test_transient_failures_exhaust_five_attempts_then_dead_letter_with_high_severity(job) -> None:
    script("down", *["transient"] * 5)
    recorded = job("down")

    wait_for_status("test.scripted", recorded, Delivery.Status.DEAD_LETTERED)

    log = attempts("test.scripted", recorded)
    assert [a.outcome for a in log] == ["retry"] * 4 + ["dead_letter"]
    letter = dead_letter("test.scripted", recorded)
    assert (letter.kind, letter.severity, letter.attempts) == ("transient", "high", 5)
    assert letter.status == DeadLetter.Status.PENDING
    assert letter.next_retry_at is not None  # transient dead letters are retried automatically
    assert letter.event_type == "test.job.requested"
    assert letter.payload == {"name": "down", "url": "", "breaker": ""}
    assert "TransientError" in letter.exception_type
    assert "Traceback" in letter.traceback
    assert effects("test.scripted", "down") == 0


def test_a_timeout_backs_off_linearly_for_three_attempts(job) -> None:
    script("slow", "timeout", "timeout", "timeout")
    recorded = job("slow")

    wait_for_status("test.scripted", recorded, Delivery.Status.DEAD_LETTERED)

    log = attempts("test.scripted", recorded)
    assert [(a.kind, a.outcome) for a in log] == [("timeout", "retry")] * 2 + [
        ("timeout", "dead_letter")
    ]
    assert [a.countdown for a in log[:2]] == pytest.approx([5 * SCALE, 10 * SCALE])
    assert dead_letter("test.scripted", recorded).severity == "medium"


@pytest.mark.parametrize("kind", ["validation", "business_rule", "not_found"])
def test_a_non_retryable_kind_is_dead_lettered_at_once(job, kind: str) -> None:
    script(f"bad-{kind}", kind)
    recorded = job(f"bad-{kind}")

    wait_for_status("test.scripted", recorded, Delivery.Status.DEAD_LETTERED)

    assert [(a.number, a.outcome) for a in attempts("test.scripted", recorded)] == [
        (1, "dead_letter")
    ]
    letter = dead_letter("test.scripted", recorded)
    assert (letter.kind, letter.attempts) == (kind, 1)
    assert letter.next_retry_at is None


def test_an_unknown_exception_is_a_critical_system_dead_letter_and_escalates_at_once(job) -> None:
    script("buggy", "system")
    recorded = job("buggy")

    wait_for_status("test.scripted", recorded, Delivery.Status.DEAD_LETTERED)

    letter = dead_letter("test.scripted", recorded)
    assert (letter.kind, letter.severity, letter.exception_type) == (
        "system",
        "critical",
        "builtins.RuntimeError",
    )
    # Escalation follows the dead-lettered status by a few statements: wait for it.
    rules = wait_until(
        lambda: [e.rule for e in letter.escalations.all()], timeout=10, message="an escalation"
    )
    assert rules == ["critical at once"]


def test_unavailable_defers_without_spending_attempts(job) -> None:
    script("held", "unavailable", "unavailable", "unavailable", "transient")
    recorded = job("held")

    wait_for_status("test.scripted", recorded, Delivery.Status.SUCCEEDED)

    log = attempts("test.scripted", recorded)
    assert [(a.number, a.kind, a.outcome) for a in log] == [
        (0, "unavailable", "defer"),
        (0, "unavailable", "defer"),
        (0, "unavailable", "defer"),
        (1, "transient", "retry"),
    ]
    assert all(0 < a.countdown <= 0.25 for a in log[:3])  # until the dependency's retry_at


def test_a_handler_may_override_the_policy_of_a_kind(job) -> None:
    script("overridden:o1", "transient", "transient")
    recorded = job("o1")

    wait_for_status("test.overridden", recorded, Delivery.Status.DEAD_LETTERED)

    log = attempts("test.overridden", recorded)
    assert [(a.outcome, a.countdown) for a in log] == [
        ("retry", pytest.approx(0.1 * SCALE)),
        ("dead_letter", None),
    ]


def test_a_handler_past_its_soft_time_limit_fails_as_a_timeout(job) -> None:
    script("overridden:o2", "hang")
    recorded = job("o2")

    wait_for_status("test.overridden", recorded, Delivery.Status.SUCCEEDED)

    [first] = attempts("test.overridden", recorded)
    assert (first.kind, first.exception_type) == ("timeout", "SoftTimeLimitExceeded")
