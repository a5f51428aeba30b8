"""Operators see sagas in the console, read-only, and resume or compensate them with
actions that go through the services (a refused one is a message, never a 500)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from apps.sagas.models import SagaAction, SagaInstance
from tests.sagas.definitions import effects
from tests.sagas.ops import failed_trip, saga_row, step_row, waiting_on
from tests.support.waiting import wait_until

CHANGELIST = reverse("admin:sagas_sagainstance_changelist")


@pytest.fixture
def olivia() -> AbstractBaseUser:
    """Olivia runs Backstop: a superuser in the console."""
    return get_user_model().objects.create_superuser("olivia", "olivia@example.test", "pw-o-1")


@pytest.fixture
def console(olivia: AbstractBaseUser) -> Client:
    client = Client()
    client.force_login(olivia)
    return client


def change_page(saga: SagaInstance) -> str:
    return reverse("admin:sagas_sagainstance_change", args=[saga.pk])


def notices(response: Any) -> list[tuple[str, str]]:
    """Return the messages the console showed after the request: (level, text)."""
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


@pytest.mark.django_db
def test_the_list_shows_sagas_filtered_by_state_and_type(console: Client) -> None:
    failed = saga_row(state="failed")
    saga_row(state="failed", type="todo-completion")
    saga_row()

    page = console.get(CHANGELIST, {"state__exact": "failed", "type__exact": "test-trip"})

    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [failed]
    assert str(failed.subject_id) in page.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["pk", "correlation_id", "subject_id"])
def test_the_list_finds_a_saga_by_its_ids(console: Client, field: str) -> None:
    wanted = saga_row()
    saga_row()

    page = console.get(CHANGELIST, {"q": str(getattr(wanted, field))})

    assert list(page.context["cl"].result_list) == [wanted]


@pytest.mark.django_db
def test_searching_for_what_is_not_an_id_finds_nothing_and_is_no_error(console: Client) -> None:
    saga_row()

    page = console.get(CHANGELIST, {"q": "charge"})

    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == []


@pytest.mark.django_db
def test_a_sagas_page_shows_its_step_log_and_actions_read_only(
    console: Client, olivia: AbstractBaseUser
) -> None:
    saga = saga_row(state="failed")
    step_row(saga, "charge", status="failed", final=True, error_message="card declined")
    SagaAction.objects.create(saga=saga, action="resumed", actor=olivia, notes="tried again")

    page = console.get(change_page(saga))

    assert page.status_code == 200
    html = page.content.decode()
    assert "card declined" in html
    assert "tried again" in html
    assert 'name="_save"' not in html  # view only: no form to save
    assert console.post(change_page(saga), {"state": "completed"}).status_code == 403
    saga.refresh_from_db()
    assert saga.state == "failed"


@pytest.mark.django_db
def test_nobody_adds_or_deletes_a_saga_in_the_console(console: Client) -> None:
    saga = saga_row()

    assert console.get(reverse("admin:sagas_sagainstance_add")).status_code == 403
    delete = reverse("admin:sagas_sagainstance_delete", args=[saga.pk])
    assert console.post(delete, {"post": "yes"}).status_code == 403
    assert SagaInstance.objects.filter(pk=saga.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("action", "state"),
    [("resume_selected", "completed"), ("compensate_selected", "compensated")],
)
def test_an_action_the_state_forbids_is_reported_per_saga(
    console: Client, action: str, state: str
) -> None:
    saga = saga_row(state=state)

    page = console.post(CHANGELIST, {"action": action, "_selected_action": [saga.pk]}, follow=True)

    assert page.status_code == 200
    got = notices(page)
    assert (
        "success",
        "0 saga(s) " + ("resumed." if "resume" in action else "now compensating."),
    ) in got
    assert any(level == "warning" and str(saga.pk) in text and state in text for level, text in got)
    saga.refresh_from_db()
    assert saga.state == state
    assert not SagaAction.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("inline_worker")
def test_resuming_from_the_console_compensates_a_failed_saga_again(
    console: Client, olivia: AbstractBaseUser
) -> None:
    name = f"trip-{uuid.uuid4()}"
    failed = failed_trip(name)
    done = saga_row(state="completed")

    form = {"action": "resume_selected", "_selected_action": [failed.pk, done.pk]}
    page = console.post(CHANGELIST, form, follow=True)

    got = notices(page)
    assert ("success", "1 saga(s) resumed.") in got
    assert any(level == "warning" and str(done.pk) in text for level, text in got)
    [resumed] = SagaAction.objects.filter(saga=failed)
    assert (resumed.action, resumed.actor) == ("resumed", olivia)
    wait_until(
        lambda: SagaInstance.objects.filter(pk=failed.pk, state="compensated").exists(),
        message="the saga compensated",
    )
    assert effects("reserve.undo", name) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("inline_worker")
def test_compensating_from_the_console_undoes_a_running_sagas_steps(
    console: Client, olivia: AbstractBaseUser
) -> None:
    name = f"trip-{uuid.uuid4()}"
    saga = waiting_on("charge", name)

    form = {"action": "compensate_selected", "_selected_action": [saga.pk]}
    page = console.post(CHANGELIST, form, follow=True)

    assert ("success", "1 saga(s) now compensating.") in notices(page)
    [compensated] = SagaAction.objects.filter(saga=saga)
    assert (compensated.action, compensated.actor) == ("compensated", olivia)
    wait_until(
        lambda: SagaInstance.objects.filter(pk=saga.pk, state="compensated").exists(),
        message="the saga compensated",
    )
    assert effects("reserve.undo", name) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("inline_worker")
def test_a_sagas_own_page_resumes_it_for_an_operator_and_shows_a_viewer_no_buttons(
    console: Client, olivia: AbstractBaseUser
) -> None:
    name = f"trip-{uuid.uuid4()}"
    failed = failed_trip(name)
    act = reverse("admin:sagas_sagainstance_act", args=[failed.pk])
    viewer = get_user_model().objects.create_user("victor", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    watching = Client()
    watching.force_login(viewer)

    assert act in console.get(change_page(failed)).content.decode()
    assert watching.get(change_page(failed)).status_code == 200
    assert act not in watching.get(change_page(failed)).content.decode()
    assert watching.post(act, {"action": "resume"}).status_code == 403
    assert console.post(act, {"action": "explode"}).status_code == 400

    page = console.post(act, {"action": "resume", "notes": "the hotel answers"}, follow=True)

    assert ("success", f"Saga {failed.pk} is compensating.") in notices(page)
    [resumed] = SagaAction.objects.filter(saga=failed)
    assert (resumed.action, resumed.actor, resumed.notes) == (
        "resumed",
        olivia,
        "the hotel answers",
    )
    wait_until(
        lambda: SagaInstance.objects.filter(pk=failed.pk, state="compensated").exists(),
        message="the saga compensated",
    )
    again = console.post(act, {"action": "resume"}, follow=True)
    assert any(level == "warning" for level, _ in notices(again))
