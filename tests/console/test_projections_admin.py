"""The projections page: checkpoint, lag and last error; a rebuild runs as a task, once.

No worker runs here: the todo events are appended with the store directly and nothing
applies them, so the projection lags; the rebuild task is run in-process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import Max
from django.test import Client
from django.utils import timezone

from apps.eventstore import projections, rebuild_progress, store
from apps.eventstore.models import Event, ProjectionState
from apps.eventstore.store import CommandContext
from apps.eventstore.tasks import rebuild_projection
from apps.resilience.models import DeadLetter
from apps.todos.events import TodoCreated

pytestmark = pytest.mark.django_db
PAGE = "/admin/console/projections/"


@pytest.fixture(autouse=True)
def no_rebuild_in_the_cache() -> Iterator[None]:
    keys = ["projection-rebuild:todos", "projection-rebuild:todos:lock"]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("olivia", "o@example.test"))
    return client


@pytest.fixture
def caught_up() -> int:
    """The todos projection has applied the whole log so far; return the log's head."""
    head = Event.objects.aggregate(head=Max("position"))["head"] or 0
    ProjectionState.objects.update_or_create(name="todos", defaults={"position": head})
    return head


def append_todos(count: int) -> None:
    """Append ``count`` todo.created events, applying none of them."""
    for n in range(count):
        store.append(
            stream_type="todo",
            stream_id=uuid.uuid4(),
            expected_version=0,
            events=[TodoCreated(owner_id=1, title=f"todo {n}")],
            context=CommandContext(actor_id="tests"),
        )


def todos_row(client: Client) -> dict[str, Any]:
    response = client.get(PAGE)
    assert response.status_code == 200
    [row] = [row for row in response.context["projections"] if row["name"] == "todos"]
    return row


def test_the_page_shows_the_lag_of_events_appended_but_not_applied(
    operator: Client, caught_up: int
) -> None:
    append_todos(3)

    row = todos_row(operator)

    assert (row["state"].position, row["lag_events"]) == (caught_up, 3)
    assert row["head"] > caught_up
    assert 0 <= row["lag_seconds"] < 60
    assert row["state"].generation == projections.current_generation("todos")
    page = operator.get(PAGE).content.decode()
    assert '<td class="lag-events">3</td>' in page


def test_a_caught_up_projection_has_no_lag_and_shows_its_handlers_last_error(
    operator: Client, caught_up: int
) -> None:
    now = timezone.now()
    DeadLetter.objects.create(
        handler="todos.projection",
        kind="system",
        severity="critical",
        exception_type="KeyError",
        message="owner_id",
        fingerprint="f",
        first_failed_at=now,
        last_failed_at=now,
    )

    row = todos_row(operator)

    assert (row["lag_events"], row["lag_seconds"]) == (0, 0.0)
    assert row["last_error"].message == "owner_id"
    assert "KeyError: owner_id" in operator.get(PAGE).content.decode()


def test_a_rebuild_is_sent_after_commit_runs_to_its_total_and_a_second_is_refused(
    operator: Client, caught_up: int, django_capture_on_commit_callbacks: Any
) -> None:
    append_todos(3)
    total = projections.count_events("todos")
    before = projections.current_generation("todos")

    with django_capture_on_commit_callbacks() as sent:
        operator.post(PAGE, {"name": "todos"})
        again = operator.post(PAGE, {"name": "todos"}, follow=True)

    assert len(sent) == 1  # the second press sent nothing
    assert "already being rebuilt" in again.content.decode()
    assert todos_row(operator)["rebuild"] | {"updated_at": None} == {
        "status": "queued",
        "applied": 0,
        "total": total,
        "updated_at": None,
    }

    rebuild_projection.apply(args=["todos"])  # what the worker runs

    row = todos_row(operator)
    assert row["rebuild"]["status"] == "finished"
    assert row["rebuild"]["applied"] == row["rebuild"]["total"] == total
    assert row["state"].generation == before + 1
    assert row["lag_events"] == 0
    assert f"finished: {total} / {total} events" in operator.get(PAGE).content.decode()
    assert not rebuild_progress.is_locked("todos")  # and a new rebuild may be asked for


def test_a_rebuild_running_elsewhere_refuses_the_button_and_the_task(
    operator: Client, caught_up: int, django_capture_on_commit_callbacks: Any
) -> None:
    ProjectionState.objects.filter(name="todos").update(rebuilding=99)

    with django_capture_on_commit_callbacks() as sent:
        refused = operator.post(PAGE, {"name": "todos"}, follow=True)

    assert sent == []
    assert "already being rebuilt" in refused.content.decode()
    assert rebuild_projection.apply(args=["todos"]).get() == 0
    assert rebuild_progress.progress("todos")["status"] == "refused"
    assert not rebuild_progress.is_locked("todos")


def test_staff_without_the_permission_cannot_rebuild(django_capture_on_commit_callbacks) -> None:
    sam = Client()
    sam.force_login(get_user_model().objects.create_user("sam", is_staff=True))

    with django_capture_on_commit_callbacks() as sent:
        refused = sam.post(PAGE, {"name": "todos"})

    assert refused.status_code == 403
    assert sent == []
    assert sam.get(PAGE).status_code == 200
