"""The orchestrator's promises about worker processes: a step past its time limit, and a
worker killed in the middle of a step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.resilience.models import Delivery
from apps.resilience.services import ledger
from apps.sagas.models import SagaInstance
from tests.resilience.handlers import script
from tests.sagas.definitions import effects, request_trip, running_pid
from tests.sagas.trips import (
    STEPS,
    all_effects,
    attempts_of,
    delivery_of,
    letter_of,
    message_ids,
    once,
    payloads,
    saga_of,
    step_log,
    trip_name,
    wait_for_saga,
)
from tests.support.broker import PrivateRedis, celery_broker, free_port
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess, start_worker

pytestmark = pytest.mark.django_db(transaction=True)
State = SagaInstance.State


def test_a_step_past_its_timeout_fails_as_a_timeout_and_then_compensates(
    worker: WorkerProcess,
) -> None:
    trip = trip_name("slow")
    script(f"{trip}:confirm", "hang", "hang")  # QUICK: two timeout attempts, then dead
    trigger = request_trip(trip)

    saga = wait_for_saga(trigger, timeout=40)

    assert saga.state == State.COMPENSATED
    confirm = [row for row in step_log(saga) if row[0] == "confirm"]
    assert confirm == [
        ("confirm", "action", 1, "failed", "timeout", False),
        ("confirm", "action", 2, "failed", "timeout", True),
    ]
    [message] = message_ids(saga, "confirm")
    assert [
        (a.number, a.kind, a.outcome, a.exception_type) for a in attempts_of("confirm", message)
    ] == [
        (1, "timeout", "retry", "SoftTimeLimitExceeded"),
        (2, "timeout", "dead_letter", "SoftTimeLimitExceeded"),
    ]
    assert letter_of("confirm", message).kind == "timeout"
    [failed] = payloads(saga, "saga.step_failed")
    assert (failed["step"], failed["kind"]) == ("confirm", "timeout")
    assert all_effects(trip) == once("reserve", "charge", "reserve.undo", "charge.undo")


# -- a worker killed mid-step -------------------------------------------------------------------

# The killed run is due for the ledger's re-send its hard time limit (2 + 5 s) after it
# started; no margin, so the test doesn't wait the default 30 s more.
WORKER_ENV = {"LEDGER_MARGIN_SECONDS": "0"}


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateRedis]:
    """A broker of the test's own: killing its workers leaves no unacknowledged message
    in the session's broker."""
    private = PrivateRedis(free_port())
    private.start()
    with celery_broker(private.url, monkeypatch):
        yield private
    private.stop()


def test_a_worker_killed_mid_step_is_replaced_and_every_step_takes_effectonce(
    broker: PrivateRedis, tmp_path: Path
) -> None:
    trip = trip_name("killed")
    script(f"{trip}:charge", "block")  # the charge's effect is written, then it waits
    first = start_worker(tmp_path, new_session=True, CELERY_BROKER_URL=broker.url, **WORKER_ENV)
    second: WorkerProcess | None = None
    try:
        trigger = request_trip(trip)
        wait_until(lambda: running_pid(trip, "charge"), message="the charge step to block")

        first.kill_group()  # the worker and its pool die with the charge's transaction open

        saga = saga_of(trigger)
        assert saga is not None
        assert (saga.state, saga.current_step) == ("running", "charge")
        assert effects("charge", trip) == 0  # rolled back with the killed transaction
        second = start_worker(
            tmp_path, new_session=True, CELERY_BROKER_URL=broker.url, **WORKER_ENV
        )

        def done() -> SagaInstance | None:
            ledger.reconcile()  # the test plays beat: the ledger re-sends the lost run
            found = saga_of(trigger)
            return (
                found
                if found is not None
                and found.state
                in (
                    State.COMPLETED,
                    State.COMPENSATED,
                    State.FAILED,
                )
                else None
            )

        saga = wait_until(done, timeout=40, interval=0.2, message="the saga to finish")
    finally:
        first.stop()
        if second is not None:
            second.stop()

    assert saga.state == State.COMPLETED
    assert all_effects(trip) == once(*STEPS)
    [charge] = message_ids(saga, "charge")
    found = delivery_of("charge", charge)
    assert found is not None
    assert (found.status, found.starts) == (Delivery.Status.SUCCEEDED, 2)
    assert found.resends >= 1  # the ledger sent it again: the broker's copy died unacked
    assert [row[:4] for row in step_log(saga)] == [
        (step, "action", 1, "completed") for step in STEPS
    ]
