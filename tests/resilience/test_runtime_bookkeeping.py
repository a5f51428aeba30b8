"""The runtime's own bookkeeping, in process: what counts as a worker death, and what a
run that finds its work already done still has to finish (a replayed dead letter)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from celery.exceptions import Retry
from django.core.cache import cache
from django.db import OperationalError

from apps.resilience import outcomes, runtime
from apps.resilience.models import DeadLetter, Delivery, ProcessedMessage
from tests.resilience.conftest import make_letter, request_job
from tests.resilience.handlers import effects, script

pytestmark = pytest.mark.django_db


class _Task:
    """Stands in for the Celery task around a run: records the retries it was asked for."""

    def __init__(self) -> None:
        self.retries: list[dict[str, Any]] = []

    def retry(self, *, exc: Exception, countdown: float, kwargs: dict[str, Any]) -> Retry:
        self.retries.append(kwargs)
        return Retry("retry", exc)


def _blip_while_recording(monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """The database goes away ``times`` times just as a failed run is being recorded."""
    real, left = outcomes._record_attempt, [times]

    def record(*args: Any, **kwargs: Any) -> None:
        if left[0]:
            left[0] -= 1
            raise OperationalError("could not connect to server: Connection refused")
        real(*args, **kwargs)

    monkeypatch.setattr(outcomes, "_record_attempt", record)


def test_infrastructure_blips_are_not_counted_as_worker_deaths(monkeypatch) -> None:
    recorded = request_job("blips")
    script("blips", "transient", "transient", "transient")
    _blip_while_recording(monkeypatch, times=3)
    task, forgive = _Task(), 0

    for _ in range(3):  # each run fails, and recording it fails: re-queued, nothing spent
        with pytest.raises(Retry):
            runtime.run(task, "test.scripted", str(recorded.event_id), forgive=forgive)
        forgive = task.retries[-1].get("forgive", 0)
        assert forgive == 1

    outcome = runtime.run(task, "test.scripted", str(recorded.event_id), forgive=forgive)

    assert outcome == "processed"  # not dead-lettered as "worker lost repeatedly"
    found = Delivery.objects.get(handler="test.scripted", event_id=recorded.event_id)
    assert (found.status, found.starts, found.finishes) == ("succeeded", 4, 4)
    assert not DeadLetter.objects.filter(event_id=recorded.event_id).exists()
    assert effects("test.scripted", "blips") == 1


def test_a_run_that_died_is_still_counted_as_a_worker_loss() -> None:
    recorded = request_job("died")
    Delivery.objects.create(
        handler="test.scripted", event_id=recorded.event_id, status="running", starts=2
    )  # two runs started, none finished: both died with their worker (limit 2 in tests)

    outcome = runtime.run(_Task(), "test.scripted", str(recorded.event_id))

    assert outcome == "dead_lettered"
    letter = DeadLetter.objects.get(event_id=recorded.event_id)
    assert "worker lost repeatedly" in letter.message


def test_a_replay_whose_work_was_already_done_still_resolves_its_dead_letter() -> None:
    recorded = request_job("done-before")
    letter = make_letter("test.scripted", recorded, status="retrying")
    # The replay's handler committed, then its bookkeeping failed: the fast path and the
    # processed mark both say "done" to the next run.
    Delivery.objects.create(
        handler="test.scripted",
        event_id=recorded.event_id,
        status="queued",
        starts=1,
        finishes=1,
        replay_of=letter,
    )
    ProcessedMessage.objects.create(handler="test.scripted", event_id=recorded.event_id)
    cache.set(f"processed:test.scripted:{recorded.event_id}", 1, 60)

    outcome = runtime.run(_Task(), "test.scripted", str(recorded.event_id))

    assert outcome == "duplicate"
    letter.refresh_from_db()
    assert (letter.status, letter.resolution_notes) == ("resolved", "retry succeeded")
    found = Delivery.objects.get(handler="test.scripted", event_id=recorded.event_id)
    assert found.status == "succeeded"


def test_a_stray_copy_of_a_dead_lettered_message_does_not_run_the_handler() -> None:
    recorded = request_job("stray")
    Delivery.objects.create(
        handler="test.scripted",
        event_id=recorded.event_id,
        status="dead_lettered",
        starts=1,
        finishes=1,
    )

    outcome = runtime.run(_Task(), "test.scripted", str(recorded.event_id))

    assert outcome == "ignored"
    found = Delivery.objects.get(handler="test.scripted", event_id=recorded.event_id)
    assert (found.status, found.starts, found.finishes) == ("dead_lettered", 2, 2)
    assert effects("test.scripted", "stray") == 0


def test_an_unknown_delivery_id_in_a_time_limit_report_is_only_logged() -> None:
    assert runtime.timed_out("test.scripted", str(uuid.uuid4()), 2) == "unknown"


def test_an_early_event_is_deferred_without_spending_attempts_until_its_turn() -> None:
    from django.contrib.auth import get_user_model

    from apps.eventstore.models import Event
    from apps.eventstore.store import CommandContext
    from apps.todos import services

    owner = get_user_model().objects.create_user("early-bird")
    context = CommandContext(actor_id=str(owner.pk))
    todo = services.create_todo(owner_id=owner.pk, context=context, title="first")
    services.update_todo(owner_id=owner.pk, todo_id=todo.id, context=context, title="second")
    first, second = Event.objects.filter(stream_id=todo.id).order_by("version")
    task = _Task()

    for _ in range(8):  # more than any retry policy's attempts
        with pytest.raises(Retry):
            runtime.run(task, "todos.projection", str(second.event_id))

    early = Delivery.objects.get(handler="todos.projection", event_id=second.event_id)
    assert (early.status, early.attempts) == ("deferred", 0)
    assert not DeadLetter.objects.exists()
    assert runtime.run(task, "todos.projection", str(first.event_id)) == "processed"
    assert runtime.run(task, "todos.projection", str(second.event_id)) == "processed"


def test_each_re_send_of_a_waiting_pair_puts_the_next_one_further_off(settings) -> None:
    """Behind a backlog longer than the margin, a deferred pair's countdown message is late,
    not lost: the reconciler re-sends it, and the copy runs, defers and re-publishes itself
    as the original does. Re-sent at a fixed margin, a pair waiting on another gathered one
    more copy per margin for as long as the backlog lasted (a chaos run saw 28)."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from apps.eventstore.models import Event
    from apps.eventstore.store import CommandContext
    from apps.resilience.services import ledger
    from apps.todos import services

    owner = get_user_model().objects.create_user("waits-behind")
    context = CommandContext(actor_id=str(owner.pk))
    todo = services.create_todo(owner_id=owner.pk, context=context, title="first")
    services.update_todo(owner_id=owner.pk, todo_id=todo.id, context=context, title="second")
    second = Event.objects.get(stream_id=todo.id, version=2)
    pair = Delivery.objects.filter(handler="todos.projection", event_id=second.event_id)
    margins = []
    for _ in range(4):
        with pytest.raises(Retry):  # the first version has not been applied: deferred
            runtime.run(_Task(), "todos.projection", str(second.event_id))
        early = pair.get()
        margins.append((early.reconcile_at - early.next_attempt_at).total_seconds())
        pair.update(reconcile_at=timezone.now() - timedelta(seconds=1))  # the copy is late
        assert [r.event_id for r in ledger.reconcile() if r.handler == "todos.projection"] == [
            second.event_id
        ]

    margin = settings.LEDGER_MARGIN_SECONDS
    assert margins == pytest.approx([margin, 2 * margin, 4 * margin, 8 * margin])
    assert pair.get().resends == 4
