"""Small timing settings, shared by the test process and every worker it starts."""

from __future__ import annotations

from typing import Any

TEST_TIMINGS: dict[str, Any] = {
    # Tests poll for outcomes; they shouldn't wait on grace periods or real-life backoffs.
    "OUTBOX_SWEEP_GRACE_SECONDS": 0.0,
    "RESILIENCE_DELAY_SCALE": 0.01,
    "RESILIENCE_WORKER_LOST_LIMIT": 2,
    "BREAKER_FAILURE_THRESHOLD": 3,
    "BREAKER_WINDOW_SECONDS": 30,
    "BREAKER_RESET_TIMEOUT": 1.5,
    "BREAKER_HALF_OPEN_MAX_CALLS": 1,
    "BREAKER_SUCCESS_THRESHOLD": 2,
    "BREAKER_PROBE_LEASE_SECONDS": 10.0,
    "WEBHOOK_CONNECT_TIMEOUT": 1.0,
    "WEBHOOK_READ_TIMEOUT": 2.0,
    # Waits longer than this are kept in the delivery ledger rather than the broker.
    "LEDGER_MAX_BROKER_COUNTDOWN": 5.0,
}


def apply(settings: Any) -> None:
    """Give the test process the same timings as its workers."""
    for name, value in TEST_TIMINGS.items():
        setattr(settings, name, value)
