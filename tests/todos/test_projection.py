"""The todos read model equals a fold of the events: under redelivery and reordering, and
after a rebuild from the whole log."""

from __future__ import annotations

import contextlib
import itertools
import random
import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.eventstore import projections, store
from apps.eventstore.store import CommandContext
from apps.resilience.taxonomy import BusinessRuleViolation
from apps.todos import services
from apps.todos.fields import InvalidTodo
from apps.todos.models import TodoStats, TodoView
from apps.todos.projections import OutOfOrder, TodoRows
from tests.support.waiting import wait_until

COMPARED = (
    "owner_id",
    "title",
    "description",
    "priority",
    "due_at",
    "tags",
    "status",
    "version",
    "completed_at",
    "deleted_at",
)
_generations = itertools.count(1000)

titles = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30
).filter(str.strip)
field_changes = st.fixed_dictionaries(
    {},
    optional={
        "title": titles,
        "description": st.text(max_size=20),
        "priority": st.sampled_from(["low", "medium", "high", "urgent"]),
        "tags": st.lists(st.sampled_from(["home", "work", "Errands", "x"]), max_size=3),
    },
)
commands = st.lists(
    st.one_of(
        st.tuples(st.just("create"), field_changes),
        st.tuples(st.just("update"), st.integers(0, 2), field_changes),
        st.tuples(st.sampled_from(["complete", "reopen", "delete", "restore"]), st.integers(0, 2)),
    ),
    min_size=1,
    max_size=25,
)


def run_commands(owner_id: int, script: list[tuple[Any, ...]]) -> list[uuid.UUID]:
    """Run a command script through the services; rule violations are part of the game."""
    context = CommandContext(actor_id=str(owner_id))
    todos: list[uuid.UUID] = []
    for command, *args in script:
        if command == "create":
            with contextlib.suppress(InvalidTodo):  # invalid input is refused, recording nothing
                created = services.create_todo(
                    owner_id=owner_id, context=context, **{"title": "t", **args[0]}
                )
                todos.append(created.id)
            continue
        if not todos:
            continue
        todo_id = todos[args[0] % len(todos)]
        service = getattr(services, f"{command}_todo")
        extra = args[1] if command == "update" else {}
        with contextlib.suppress(BusinessRuleViolation, InvalidTodo):
            service(owner_id=owner_id, todo_id=todo_id, context=context, **extra)
    return todos


def fold(todo_id: uuid.UUID) -> dict[str, Any]:
    todo = services.repository.load(todo_id)
    return {name: getattr(todo, name) for name in COMPARED}


def row(view: TodoView) -> dict[str, Any]:
    return {name: getattr(view, name) for name in COMPARED}


def recount(generation: int, owner_id: int) -> dict[str, int]:
    views = TodoView.objects.filter(generation=generation, owner_id=owner_id)
    live = [v for v in views if v.status != "deleted"]
    counts = {s: sum(1 for v in views if v.status == s) for s in ("open", "completed", "deleted")}
    counts["total"] = len(live)
    counts.update(
        {p: sum(1 for v in live if v.priority == p) for p in ("low", "medium", "high", "urgent")}
    )
    return counts


def stats(generation: int, owner_id: int) -> dict[str, int]:
    found = (
        TodoStats.objects.filter(generation=generation, owner_id=owner_id).first() or TodoStats()
    )
    return {
        name: getattr(found, name)
        for name in ("open", "completed", "deleted", "total", "low", "medium", "high", "urgent")
    }


@pytest.mark.django_db
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=commands, seed=st.integers(0, 2**32 - 1))
def test_any_delivery_order_with_duplicates_equals_the_fold_and_a_rebuild(
    script: list[Any], seed: int
) -> None:
    owner_id = random.Random(seed).randint(10_000, 10_000_000)
    todos = run_commands(owner_id, script)
    generation = next(_generations)
    events = [e for todo_id in todos for e in store.read_stream(todo_id)]
    deliveries = events + random.Random(seed).sample(events, k=len(events) // 2)  # redeliveries
    random.Random(seed + 1).shuffle(deliveries)

    rows = TodoRows()
    pending = deliveries
    while pending:  # what the runtime does: an event that came too early is deferred
        deferred = []
        for event in pending:
            try:
                rows.apply(event, generation)
            except OutOfOrder:
                deferred.append(event)
        assert len(deferred) < len(pending), "no progress: an event can never be applied"
        pending = deferred

    for todo_id in todos:
        assert row(TodoView.objects.get(generation=generation, todo_id=todo_id)) == fold(todo_id)
    assert stats(generation, owner_id) == recount(generation, owner_id)

    rebuilt = next(_generations)  # what a rebuild does: the log in order, once
    for event in sorted(events, key=lambda e: e.position):
        rows.apply(event, rebuilt)
    for todo_id in todos:
        live = TodoView.objects.get(generation=generation, todo_id=todo_id)
        assert row(TodoView.objects.get(generation=rebuilt, todo_id=todo_id)) == row(live)
    assert stats(rebuilt, owner_id) == stats(generation, owner_id)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("inline_worker")
def test_a_rebuild_equals_the_live_read_model_after_thousands_of_random_commands() -> None:
    rng = random.Random(20261123)
    owners = [rng.randint(1, 1_000_000) for _ in range(5)]
    all_todos: dict[uuid.UUID, int] = {}
    for owner_id in owners:
        steps = [_random_command(rng) for _ in range(400)]
        for todo_id in run_commands(owner_id, steps):
            all_todos[todo_id] = owner_id
    versions = {todo_id: services.repository.load(todo_id).version for todo_id in all_todos}
    live = projections.current_generation("todos")
    wait_until(
        lambda: _caught_up(live, versions), timeout=120, message="the live read model to catch up"
    )
    live_rows = {v.todo_id: row(v) for v in TodoView.objects.filter(generation=live)}
    live_stats = {o: stats(live, o) for o in owners}

    seen_during: list[int] = []

    def read_while_rebuilding(_: int) -> None:
        if not seen_during:  # reads keep working, from the old generation
            seen_during.append(
                TodoView.objects.filter(generation=projections.current_generation("todos")).count()
            )

    report = projections.rebuild("todos", batch=500, progress=read_while_rebuilding)

    rebuilt = projections.current_generation("todos")
    assert rebuilt == live + 1 == report.generation
    assert seen_during == [len(live_rows)]
    assert {v.todo_id: row(v) for v in TodoView.objects.filter(generation=rebuilt)} == live_rows
    assert {o: stats(rebuilt, o) for o in owners} == live_stats
    assert all(live_rows[t] == fold(t) for t in rng.sample(sorted(all_todos), 50))
    assert not TodoView.objects.filter(generation=live).exists()  # the old rows are gone
    assert report.events == sum(versions.values())


def _random_command(rng: random.Random) -> tuple[Any, ...]:
    kind = rng.choice(["create", "create", "update", "complete", "reopen", "delete", "restore"])
    if kind == "create":
        return (
            "create",
            {"priority": rng.choice(["low", "medium", "high", "urgent"]), "tags": ["x"]},
        )
    if kind == "update":
        return ("update", rng.randint(0, 50), {"title": f"title {rng.randint(0, 9)}"})
    return (kind, rng.randint(0, 50))


def _caught_up(generation: int, versions: dict[uuid.UUID, int]) -> bool:
    applied = dict(TodoView.objects.filter(generation=generation).values_list("todo_id", "version"))
    return all(applied.get(todo_id) == version for todo_id, version in versions.items())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("inline_worker")
def test_the_rebuild_command_prints_its_rate_and_a_command_during_the_rebuild_is_not_lost() -> None:
    context = CommandContext(actor_id="1")
    first = services.create_todo(owner_id=1, context=context, title="before")
    created_during: list[uuid.UUID] = []

    def create_one(_: int) -> None:
        if not created_during:
            created_during.append(
                services.create_todo(owner_id=1, context=context, title="during").id
            )

    projections.rebuild("todos", batch=1, progress=create_one)

    generation = projections.current_generation("todos")
    wait_until(
        lambda: (
            TodoView.objects.filter(
                generation=generation, todo_id__in=[first.id, *created_during]
            ).count()
            == 2
        ),
        message="both todos in the new generation",
    )
    out = StringIO()
    call_command("rebuild_projection", "todos", "--no-progress", stdout=out)
    assert "events/s" in out.getvalue()
