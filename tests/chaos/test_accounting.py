"""The chaos harness's counting can fail: a clean run counts nothing wrong, and each kind of
damage (a delivery that never ended, a command acknowledged with no event, a read-model row
too many, a rejected command that took effect) is counted where it belongs.

The run is made in-process (``inline_worker``) through the API, then damaged by hand.
The poison scenario's plan of faults, and how its handler reads one, are checked too, and
which dead letters worker-kills takes for findings.
"""

from __future__ import annotations

import uuid
from collections import Counter as Tally

import pytest

from apps.eventstore import projections
from apps.eventstore.models import Event, ProjectionState
from apps.resilience.classify import classify
from apps.resilience.models import Delivery
from apps.resilience.services.dead_letters import record
from apps.resilience.taxonomy import BusinessRuleViolation, WorkerLostRepeatedly
from apps.todos.models import TodoView
from tests.chaos.accounting import Report, account
from tests.chaos.effects import KILL, PERMANENT, POISON, TRANSIENT, fault_of
from tests.chaos.load import Command
from tests.chaos.scenarios.poison_mix import plan
from tests.chaos.scenarios.worker_kills import crash_loops
from tests.support.api import Api
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]


def created(api: Api, count: int) -> list[Command]:
    """Create ``count`` todos through the API, each request with its command id; wait for
    the read model to have them."""
    commands = []
    for number in range(count):
        command = Command(id=str(uuid.uuid4()), kind="create")
        response = api.post("todos/", {"title": f"Chaos {number}"}, **{"X-Request-ID": command.id})
        command.status, command.stream_id = response.status_code, response.json()["id"]
        projected(command.stream_id, 1)
        commands.append(command)
    return commands


def counts(report: Report) -> tuple[int, int, int]:
    return report.lost, report.duplicated, report.unaccounted


def test_a_clean_run_counts_nothing_wrong(alice: Api) -> None:
    report = account(created(alice, 3))

    assert counts(report) == (0, 0, 0), report.problems
    assert report.outcomes == {"acknowledged": 3}
    assert report.handler_runs >= 3


def test_a_delivery_that_never_ended_is_lost(alice: Api) -> None:
    commands = created(alice, 2)
    handed_on = Event.objects.filter(type="todo.created").order_by("position").first()
    Delivery.objects.create(
        handler="todos.projection", event_id=handed_on.event_id, status="queued"
    )

    report = account(commands)

    assert report.lost == 1, report.problems
    assert "no terminal delivery" in " ".join(report.problems)


def test_a_projection_whose_checkpoint_is_behind_its_events_lost_them(alice: Api) -> None:
    commands = created(alice, 3)
    first = Event.objects.filter(type="todo.created").order_by("position").first()
    ProjectionState.objects.filter(name="todos").update(position=first.position)

    report = account(commands)

    assert report.lost == 2, report.problems
    assert "todos<-todo.created" in " ".join(report.problems)


def test_an_acknowledged_command_with_no_event_is_lost(alice: Api) -> None:
    commands = created(alice, 1)
    ghost = Command(id=str(uuid.uuid4()), kind="create", status=201, stream_id=str(uuid.uuid4()))

    report = account([*commands, ghost])

    assert report.lost == 1, report.problems
    assert ghost.id in " ".join(report.problems)


def test_a_read_model_row_too_many_is_duplicated(alice: Api) -> None:
    commands = created(alice, 1)
    row = TodoView.objects.get(todo_id=commands[0].stream_id)
    row.pk, row.todo_id = None, uuid.uuid4()  # a row of no todo stream
    row.generation = projections.current_generation("todos")
    row.save()

    report = account(commands)

    assert report.duplicated == 1, report.problems


def test_a_rejected_command_that_took_effect_is_unaccounted(alice: Api) -> None:
    commands = created(alice, 2)
    commands[1].status = 400  # the client was told no, but the todo exists

    report = account(commands)

    assert report.unaccounted == 1, report.problems


def test_a_poison_handler_success_with_no_effect_is_lost(alice: Api) -> None:
    commands = created(alice, 1)
    event = Event.objects.get(stream_id=str(commands[0].stream_id), type="todo.created")
    Delivery.objects.create(
        handler=POISON, event_id=event.event_id, status="succeeded", starts=1, finishes=1
    )

    report = account(commands)

    assert report.lost == 1, report.problems
    assert f"{POISON} succeeded with no effect" in " ".join(report.problems)


def test_the_poison_plan_injects_each_fault_by_its_share_and_at_least_once() -> None:
    faults = plan(400, seed=7)

    assert len(faults) == 400
    assert Tally(faults) == {PERMANENT: 8, TRANSIENT: 20, KILL: 2, None: 370}
    assert plan(400, seed=7) == faults
    assert Tally(plan(10, seed=7))[KILL] == 1


def test_the_fault_is_read_from_the_title_and_only_a_known_one() -> None:
    assert fault_of("chaos 1a2b3c4d fault:kill") == KILL
    assert fault_of("chaos 1a2b3c4d fault:transient") == TRANSIENT
    assert fault_of("chaos 1a2b3c4d") is None
    assert fault_of("chaos fault:explode") is None


def test_worker_kills_names_every_dead_letter_but_the_crash_loop_guards() -> None:
    for exc in (WorkerLostRepeatedly("3 runs died with their worker"), BusinessRuleViolation("no")):
        kind = classify(exc)
        record(handler=POISON, exc=exc, classification=kind, attempts=3, event_id=uuid.uuid4())

    found = crash_loops()

    assert len(found) == 1, found
    assert "BusinessRuleViolation" in found[0]
