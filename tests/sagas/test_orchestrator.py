"""The orchestrator on the test trip (reserve → charge → confirm → announce), in process.

Every delivery goes through production's path (outbox, relay, broker, the resilient
runtime with its retries and dead letters) and runs in the test's process when the test
waits (``inline_worker``); what needs a worker process (time limits, a killed worker) is
in ``test_orchestrator_worker``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone

from apps.eventstore.relay import send_delivery
from apps.resilience.models import DeadLetterAction, Delivery, Escalation, ProcessedMessage
from apps.resilience.services import dead_letters
from apps.sagas import orchestrator, services
from apps.sagas.models import SagaAction, SagaInstance, SagaStep
from tests.resilience.handlers import script
from tests.sagas.definitions import effects, request_trip
from tests.sagas.trips import (
    STEPS,
    all_effects,
    delivery_of,
    handler,
    letter_of,
    message_ids,
    once,
    payloads,
    run_messages,
    run_round,
    saga_of,
    step_log,
    stream,
    take_waiting,
    trip_name,
    types,
    wait_for_saga,
)
from tests.support.inline import InlineWorker
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
State = SagaInstance.State


def _operator() -> Any:
    return get_user_model().objects.create_user(f"op-{uuid.uuid4().hex[:8]}")


# -- 1. the happy path ----------------------------------------------------------------------


def test_every_step_runs_once_in_order_and_the_saga_completes(inline_worker: InlineWorker) -> None:
    trip = trip_name("happy")
    trigger = request_trip(trip)

    saga = wait_for_saga(trigger)

    assert saga.state == State.COMPLETED
    assert all_effects(trip) == once(*STEPS)
    assert types(saga) == [
        "saga.started",
        *[kind for step in STEPS for kind in (handler(step), "saga.step_completed")],
        "saga.completed",
    ]
    assert [p["step"] for p in payloads(saga, "saga.step_completed")] == list(STEPS)
    assert payloads(saga, "saga.started")[0]["steps"] == list(STEPS)
    assert step_log(saga) == [(step, "action", 1, "completed", "", False) for step in STEPS]
    # The trigger's correlation id runs through the saga and into the steps' effects.
    correlation = str(trigger.metadata.correlation_id)
    assert saga.correlation_id == trigger.metadata.correlation_id
    assert {row.metadata["correlation_id"] for row in stream(saga)} == {correlation}
    assert saga.context["trip"] == trip
    assert all(saga.context[f"{step}_done"] for step in STEPS)
    assert (saga.pending_event_id, saga.deadline) == (None, None)
    assert saga.finished_at is not None
    assert saga.version == len(stream(saga))
    # Each step's message was delivered once, to its own handler.
    for step in STEPS:
        [event_id] = message_ids(saga, step)
        found = delivery_of(step, event_id)
        assert found is not None
        assert (found.status, found.starts) == ("succeeded", 1)


def test_a_redelivered_trigger_starts_no_second_saga(inline_worker: InlineWorker) -> None:
    trigger = request_trip(trip_name("twice-started"))
    wait_for_saga(trigger)
    ProcessedMessage.objects.filter(handler="test.trip.start").delete()
    cache.delete(f"processed:test.trip.start:{trigger.event_id}")

    send_delivery("test.trip.start", trigger.event_id)

    wait_until(
        lambda: Delivery.objects.get(handler="test.trip.start").starts == 2,
        message="the trigger's second delivery",
    )
    assert SagaInstance.objects.filter(trigger_event_id=trigger.event_id).count() == 1


# -- 2. retries -----------------------------------------------------------------------------


def test_a_step_that_fails_twice_then_succeeds_is_logged_and_takes_effectonce(
    inline_worker: InlineWorker,
) -> None:
    trip = trip_name("flaky")
    script(f"{trip}:charge", "transient", "transient")
    trigger = request_trip(trip)

    saga = wait_for_saga(trigger)

    assert saga.state == State.COMPLETED
    charge = [row for row in step_log(saga) if row[0] == "charge"]
    assert charge == [
        ("charge", "action", 1, "failed", "transient", False),
        ("charge", "action", 2, "failed", "transient", False),
        ("charge", "action", 3, "completed", "", False),
    ]
    assert all_effects(trip) == once(*STEPS)
    [event_id] = message_ids(saga, "charge")  # retried by the runtime, not asked again
    assert delivery_of("charge", event_id).attempts == 2


# -- 3. compensation ------------------------------------------------------------------------


def test_a_step_failing_for_good_undoes_the_completed_steps_latest_first(
    inline_worker: InlineWorker,
) -> None:
    trip = trip_name("refused")
    script(f"{trip}:confirm", "business_rule")
    trigger = request_trip(trip)

    saga = wait_for_saga(trigger)

    assert saga.state == State.COMPENSATED
    assert all_effects(trip) == once("reserve", "charge", "reserve.undo", "charge.undo")
    assert types(saga) == [
        "saga.started",
        handler("reserve"),
        "saga.step_completed",
        handler("charge"),
        "saga.step_completed",
        handler("confirm"),
        "saga.step_failed",
        "saga.compensating",
        handler("charge", undo=True),
        "saga.step_compensated",
        handler("reserve", undo=True),
        "saga.step_compensated",
        "saga.compensated",
    ]
    [failed] = payloads(saga, "saga.step_failed")
    assert (failed["step"], failed["kind"], failed["compensates"]) == (
        "confirm",
        "business_rule",
        True,
    )
    assert payloads(saga, "saga.compensating")[0]["failed_step"] == "confirm"
    assert [p["step"] for p in payloads(saga, "saga.step_compensated")] == ["charge", "reserve"]
    assert step_log(saga) == [
        ("reserve", "action", 1, "completed", "", False),
        ("charge", "action", 1, "completed", "", False),
        ("confirm", "action", 1, "failed", "business_rule", True),
        ("charge", "compensation", 1, "completed", "", False),
        ("reserve", "compensation", 1, "completed", "", False),
    ]
    # The compensations happened in that order: their effects' log positions say so too.
    undo_positions = [
        stream_row.position
        for step in ("charge.undo", "reserve.undo")
        for stream_row in _effect_rows(step, trip)
    ]
    assert undo_positions == sorted(undo_positions)
    assert saga.context["compensation_reason"].startswith("business_rule")
    assert "confirm: that is not allowed now" in saga.last_error
    [confirm_message] = message_ids(saga, "confirm")
    assert letter_of("confirm", confirm_message).kind == "business_rule"


def _effect_rows(step: str, trip: str) -> list[Any]:
    from apps.eventstore.models import Event
    from tests.sagas.definitions import effect_stream

    return list(Event.objects.filter(stream_id=effect_stream(step, trip)).order_by("position"))


def test_a_step_failing_for_good_after_retries_compensates_too(
    inline_worker: InlineWorker,
) -> None:
    trip = trip_name("down")
    script(f"{trip}:charge", *["transient"] * 4)  # QUICK: four transient attempts
    trigger = request_trip(trip)

    saga = wait_for_saga(trigger)

    assert saga.state == State.COMPENSATED
    # charge never completed, so only the reservation is undone.
    assert all_effects(trip) == once("reserve", "reserve.undo")
    charge = [row for row in step_log(saga) if row[0] == "charge"]
    assert [(r[2], r[3], r[4], r[5]) for r in charge] == [
        (1, "failed", "transient", False),
        (2, "failed", "transient", False),
        (3, "failed", "transient", False),
        (4, "failed", "transient", True),
    ]


# -- 4. a compensation that fails for good ---------------------------------------------------


def _failed_trip(label: str) -> tuple[str, Any, SagaInstance]:
    """A trip whose confirm is refused and whose reservation can't be undone."""
    trip = trip_name(label)
    script(f"{trip}:confirm", "business_rule")
    script(f"{trip}:reserve.undo", "business_rule")
    trigger = request_trip(trip)
    return trip, trigger, wait_for_saga(trigger)


def test_a_compensation_failing_for_good_fails_the_saga_with_a_critical_escalated_letter(
    inline_worker: InlineWorker,
) -> None:
    trip, _trigger, saga = _failed_trip("stuck")

    assert saga.state == State.FAILED
    assert all_effects(trip) == once("reserve", "charge", "charge.undo")
    assert types(saga)[-3:] == [
        "saga.step_compensated",
        handler("reserve", undo=True),
        "saga.failed",
    ]
    [failed] = payloads(saga, "saga.failed")
    assert (failed["step"], failed["kind"]) == ("reserve", "business_rule")
    assert step_log(saga)[-1] == ("reserve", "compensation", 1, "failed", "business_rule", True)
    [undo_message] = message_ids(saga, "reserve", undo=True)
    letter = letter_of("reserve", undo_message, undo=True)
    assert (letter.handler, letter.kind, letter.severity) == (
        "saga.test-trip.reserve.undo",
        "business_rule",
        "critical",
    )
    raised = DeadLetterAction.objects.get(
        dead_letter=letter, action=DeadLetterAction.Action.SEVERITY_RAISED
    )
    assert raised.details == {"from": "low", "to": "critical"}  # business_rule's usual: low
    assert str(saga.id) in raised.notes
    escalation = Escalation.objects.get(dead_letter=letter, rule="critical at once")
    assert escalation.severity == "critical"
    assert saga.finished_at is not None
    assert saga.deadline is None


# -- 5. a step that may fail -------------------------------------------------------------------


def test_a_step_that_may_fail_fails_for_good_and_the_saga_still_completes(
    inline_worker: InlineWorker,
) -> None:
    trip = trip_name("quiet")
    script(f"{trip}:announce", "business_rule")
    trigger = request_trip(trip)

    saga = wait_for_saga(trigger)

    assert saga.state == State.COMPLETED
    assert all_effects(trip) == once("reserve", "charge", "confirm")
    assert types(saga)[-3:] == [handler("announce"), "saga.step_failed", "saga.completed"]
    [failed] = payloads(saga, "saga.step_failed")
    assert (failed["step"], failed["kind"], failed["compensates"]) == (
        "announce",
        "business_rule",
        False,
    )
    assert "saga.compensating" not in types(saga)
    assert step_log(saga)[-1] == ("announce", "action", 1, "failed", "business_rule", True)


# -- 7. duplicates and stale messages ---------------------------------------------------------


def test_each_step_message_delivered_again_takes_no_second_effect(
    inline_worker: InlineWorker,
) -> None:
    trip = trip_name("again")
    trigger = request_trip(trip)
    saga = wait_for_saga(trigger)
    messages = {step: message_ids(saga, step)[0] for step in STEPS}

    for step, event_id in messages.items():
        send_delivery(handler(step), event_id)

    wait_until(
        lambda: all(delivery_of(s, e).starts == 2 for s, e in messages.items()),
        message="every step's message to run again",
    )
    assert all_effects(trip) == once(*STEPS)
    assert SagaStep.objects.filter(saga=saga).count() == len(STEPS)
    assert len(stream(saga)) == saga.version


def test_a_redelivery_past_the_processed_mark_is_stopped_by_the_saga_itself(
    inline_worker: InlineWorker,
) -> None:
    """Without the runtime's processed mark (and its Redis fast path), the saga's own
    guard (it waits for another message now) keeps a step from running twice."""
    trip = trip_name("unmarked")
    trigger = request_trip(trip)
    run_round()  # started: the reservation is asked for
    run_round()  # reserved: the charge is asked for
    saga = saga_of(trigger)
    assert saga is not None
    assert (saga.state, saga.current_step) == ("running", "charge")
    [charge_message] = take_waiting()
    reserve = message_ids(saga, "reserve")[0]
    ProcessedMessage.objects.filter(handler=handler("reserve"), event_id=reserve).delete()
    cache.delete(f"processed:{handler('reserve')}:{reserve}")

    send_delivery(handler("reserve"), reserve)
    assert run_round() == [handler("reserve")]  # while the saga waits for the charge

    assert delivery_of("reserve", reserve).starts == 2
    assert ProcessedMessage.objects.filter(handler=handler("reserve"), event_id=reserve).exists()
    assert effects("reserve", trip) == 1
    saga.refresh_from_db()
    assert (saga.current_step, saga.version) == ("charge", len(stream(saga)))
    run_messages([charge_message])
    saga = wait_for_saga(trigger)
    assert saga.state == State.COMPLETED
    assert all_effects(trip) == once(*STEPS)
    assert SagaStep.objects.filter(saga=saga, step="reserve").count() == 1


def test_a_message_superseded_by_a_resume_does_nothing(inline_worker: InlineWorker) -> None:
    trip = trip_name("stale")
    trigger = request_trip(trip)
    assert run_round() == ["test.trip.start"]
    saga = saga_of(trigger)
    assert saga is not None
    assert saga.current_step == "reserve"
    [old] = take_waiting()  # the reservation's first message, held back
    operator = _operator()

    services.resume(saga.id, actor=operator, notes="stuck?")

    saga.refresh_from_db()
    [first, second] = message_ids(saga, "reserve")
    assert saga.pending_event_id == second
    assert old.args[1] == str(first)
    send_delivery(*old.args)  # the old message arrives after all
    assert run_round().count(handler("reserve")) == 2  # the stale one and the new one
    assert effects("reserve", trip) == 1
    assert delivery_of("reserve", first).status == "succeeded"
    saga = wait_for_saga(trigger)
    assert saga.state == State.COMPLETED
    assert all_effects(trip) == once(*STEPS)
    assert [row[:4] for row in step_log(saga) if row[0] == "reserve"] == [
        ("reserve", "action", 1, "completed")
    ]
    assert SagaAction.objects.get(saga=saga).action == SagaAction.Action.RESUMED


# -- 9. the overdue sweep -----------------------------------------------------------------------


def test_the_sweep_compensates_a_saga_whose_dead_letter_hook_never_ran(
    inline_worker: InlineWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    trip = trip_name("orphaned")
    script(f"{trip}:confirm", "business_rule")
    calls: list[Any] = []
    # The process dies between the dead letter's commit and the hook: the hook never runs.
    monkeypatch.setattr(orchestrator, "after_final_failure", lambda *args: calls.append(args))
    trigger = request_trip(trip)
    [confirm] = wait_until(
        lambda: (saga := saga_of(trigger)) and message_ids(saga, "confirm"),
        message="the confirm step to be asked for",
    )
    wait_until(
        lambda: (found := delivery_of("confirm", confirm)) and found.status == "dead_lettered",
        message="confirm to be dead-lettered",
    )
    monkeypatch.undo()
    assert len(calls) == 1
    saga = saga_of(trigger)
    assert saga is not None
    assert (saga.state, saga.current_step, saga.pending_event_id) == ("running", "confirm", confirm)
    assert services.recover_overdue() == 0  # not past its deadline yet
    SagaInstance.objects.filter(pk=saga.pk).update(deadline=timezone.now())

    assert services.recover_overdue() == 1

    saga = wait_for_saga(trigger)
    assert saga.state == State.COMPENSATED
    assert all_effects(trip) == once("reserve", "charge", "reserve.undo", "charge.undo")
    assert [p["step"] for p in payloads(saga, "saga.step_compensated")] == ["charge", "reserve"]
    assert ("confirm", "action", 1, "failed", "business_rule", True) in step_log(saga)
    assert services.recover_overdue() == 0


def test_the_sweep_asks_again_for_a_step_whose_message_was_lost(
    inline_worker: InlineWorker,
) -> None:
    trip = trip_name("lost")
    trigger = request_trip(trip)
    run_round()  # the saga starts and asks for the reservation
    run_round()  # the reservation runs and asks for the charge
    saga = saga_of(trigger)
    assert saga is not None
    assert saga.current_step == "charge"
    [lost] = take_waiting()  # the broker loses the charge's message
    assert lost.args[0] == handler("charge")
    SagaInstance.objects.filter(pk=saga.pk).update(deadline=timezone.now())

    assert services.recover_overdue() == 1

    saga = wait_for_saga(trigger)
    assert saga.state == State.COMPLETED
    assert all_effects(trip) == once(*STEPS)
    first, second = message_ids(saga, "charge")
    assert str(first) == lost.args[1]
    assert delivery_of("charge", second).status == "succeeded"
    # The lost message turning up at last (the ledger re-sends it) is stale: nothing runs.
    send_delivery(*lost.args)
    wait_until(
        lambda: (found := delivery_of("charge", first)) and found.status == "succeeded",
        message="the lost message to run",
    )
    assert all_effects(trip) == once(*STEPS)
    assert SagaStep.objects.filter(saga=saga, step="charge").count() == 1


# -- 10. operators ---------------------------------------------------------------------------


def test_resume_runs_a_failed_compensation_again_and_the_saga_ends_compensated(
    inline_worker: InlineWorker,
) -> None:
    trip, trigger, saga = _failed_trip("resumed")
    assert saga.state == State.FAILED
    [undo_message] = message_ids(saga, "reserve", undo=True)
    operator = _operator()

    resumed = services.resume(saga.id, actor=operator, notes="the hotel answers again")

    assert resumed.state == State.COMPENSATING
    # The fresh message replaces the failed one: its critical letter is closed, not left open.
    replaced = letter_of("reserve", undo_message, undo=True)
    assert (replaced.status, replaced.resolved_by) == ("resolved", operator)
    saga = wait_for_saga(trigger, State.COMPENSATED)
    assert all_effects(trip) == once("reserve", "charge", "reserve.undo", "charge.undo")
    assert types(saga)[-5:] == [
        "saga.failed",
        "saga.compensating",
        handler("reserve", undo=True),
        "saga.step_compensated",
        "saga.compensated",
    ]
    assert [row[:5] for row in step_log(saga) if row[:2] == ("reserve", "compensation")] == [
        ("reserve", "compensation", 1, "failed", "business_rule"),
        ("reserve", "compensation", 2, "completed", ""),
    ]
    [action] = SagaAction.objects.filter(saga=saga)
    assert (action.action, action.actor, action.notes) == (
        "resumed",
        operator,
        "the hotel answers again",
    )


def test_retrying_the_dead_letter_of_a_failed_compensation_runs_it_again(
    inline_worker: InlineWorker,
) -> None:
    """The console's retry (or the automatic one) of the critical letter must undo the
    step, not resolve the letter while the saga stays failed with the step not undone."""
    trip, trigger, saga = _failed_trip("replayed")
    [undo_message] = message_ids(saga, "reserve", undo=True)
    letter = letter_of("reserve", undo_message, undo=True)

    dead_letters.retry(letter.pk, actor=_operator())

    saga = wait_for_saga(trigger, State.COMPENSATED)
    assert all_effects(trip) == once("reserve", "charge", "reserve.undo", "charge.undo")
    letter.refresh_from_db()
    assert letter.status == "resolved"
    assert types(saga)[-3:] == ["saga.compensating", "saga.step_compensated", "saga.compensated"]


def test_a_retried_compensation_failing_again_leaves_the_letter_critical(
    inline_worker: InlineWorker,
) -> None:
    trip, trigger, saga = _failed_trip("refailed")
    script(f"{trip}:reserve.undo", "business_rule")
    [undo_message] = message_ids(saga, "reserve", undo=True)
    letter = letter_of("reserve", undo_message, undo=True)

    dead_letters.retry(letter.pk, actor=_operator())

    wait_until(
        lambda: (
            SagaStep.objects.filter(saga=saga, phase="compensation", status="failed").count() == 2
        ),
        message="the retried compensation to fail",
    )
    letter.refresh_from_db()
    assert (letter.status, letter.severity) == ("pending", "critical")
    saga.refresh_from_db()
    assert saga.state == State.FAILED
    assert effects("reserve.undo", trip) == 0
    # An operator can still resume it once the hotel answers.
    services.resume(saga.id, actor=_operator())
    assert wait_for_saga(trigger, State.COMPENSATED).state == State.COMPENSATED
    assert effects("reserve.undo", trip) == 1


def test_compensate_stops_a_running_saga_and_undoes_its_completed_steps(
    inline_worker: InlineWorker,
) -> None:
    trip = trip_name("cancelled")
    trigger = request_trip(trip)
    run_round()  # started: the reservation is asked for
    run_round()  # reserved: the charge is asked for (its message waits in the broker)
    saga = saga_of(trigger)
    assert saga is not None
    assert (saga.state, saga.current_step) == ("running", "charge")
    operator = _operator()

    services.compensate(saga.id, actor=operator, notes="the customer cancelled")

    saga = wait_for_saga(trigger)
    assert saga.state == State.COMPENSATED
    # The charge's message, still in the broker, found the saga compensating: stale.
    assert all_effects(trip) == once("reserve", "reserve.undo")
    [charge] = message_ids(saga, "charge")
    assert delivery_of("charge", charge).status == "succeeded"
    [stopped] = payloads(saga, "saga.step_failed")
    assert (stopped["step"], stopped["kind"], stopped["compensates"]) == (
        "charge",
        "operator",
        True,
    )
    assert "the customer cancelled" in stopped["message"]
    assert types(saga)[-5:] == [
        "saga.step_failed",
        "saga.compensating",
        handler("reserve", undo=True),
        "saga.step_compensated",
        "saga.compensated",
    ]
    [action] = SagaAction.objects.filter(saga=saga)
    assert (action.action, action.actor) == ("compensated", operator)
    assert stream(saga)[-1].metadata["actor_id"] == "saga:test-trip"
    assert stream(saga)[-4].metadata["actor_id"] == str(operator.pk)


def test_operators_cannot_resume_or_compensate_a_finished_saga(
    inline_worker: InlineWorker,
) -> None:
    trigger = request_trip(trip_name("finished"))
    saga = wait_for_saga(trigger)
    assert saga.state == State.COMPLETED
    operator = _operator()
    version = saga.version

    with pytest.raises(services.SagaStateError):
        services.resume(saga.id, actor=operator)
    with pytest.raises(services.SagaStateError):
        services.compensate(saga.id, actor=operator)
    with pytest.raises(services.SagaNotFound):
        services.resume(uuid.uuid4(), actor=operator)

    saga.refresh_from_db()
    assert (saga.state, saga.version) == (State.COMPLETED, version)
    assert not SagaAction.objects.exists()
