"""The ops API: staff list and read sagas, and resume or compensate one; nobody else can.

Lists and details read rows written with the ORM; resume and compensate drive a real
test-trip saga (tests/sagas/definitions.py) whose steps run in-process when a test waits.
"""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.sagas.api.pagination import NewestSagasFirst
from apps.sagas.models import SagaAction, SagaInstance
from tests.sagas.definitions import effects
from tests.sagas.ops import failed_trip, saga_row, staff, step_row, waiting_on
from tests.support.api import Api
from tests.support.waiting import wait_until

SAGAS = "ops/sagas/"
LIST_FIELDS = {
    "id",
    "type",
    "state",
    "correlation_id",
    "trigger_event_id",
    "subject_id",
    "current_step",
    "deadline",
    "last_error",
    "created_at",
    "updated_at",
    "finished_at",
}


@pytest.fixture
def olivia() -> Api:
    """Olivia, an operator (staff)."""
    return staff("olivia")


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content[:500]
    return [item["id"] for item in response.json()["results"]]


def assert_invalid(response: Any, field: str) -> None:
    assert response.status_code == 400, response.content[:500]
    assert response.json()["error"]["code"] == "invalid"
    assert list(response.json()["error"]["fields"]) == [field]


# -- who may ask -------------------------------------------------------------------------


PATHS = ["", "{id}/", "{id}/resume/", "{id}/compensate/"]
#: Every method, served or not: the refusal comes first (the matrix of
#: tests/test_authorization_matrix.py leaves the staff-only ops API out).
METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def answers(client: APIClient, saga_id: uuid.UUID) -> dict[str, int]:
    """Return the status of every method on every ops path for ``saga_id``."""
    client.raise_request_exception = False  # a crash is the 500 a user would see
    return {
        f"{method.upper()} {path}": getattr(client, method)(
            f"/api/v1/{SAGAS}{path.format(id=saga_id)}", format="json"
        ).status_code
        for path in PATHS
        for method in METHODS
    }


@pytest.mark.django_db
def test_nobody_signed_in_gets_a_401_for_every_method() -> None:
    saga = saga_row()

    statuses = answers(APIClient(), saga.pk)

    assert statuses == dict.fromkeys(statuses, 401)
    response = APIClient().post(f"/api/v1/{SAGAS}{saga.pk}/resume/")
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
def test_a_user_who_is_not_staff_gets_a_403_whether_the_saga_exists_or_not(alice: Api) -> None:
    saga = saga_row()

    existing = answers(alice.client, saga.pk)
    missing = answers(alice.client, uuid.uuid4())

    assert existing == dict.fromkeys(existing, 403)
    assert missing == existing
    assert alice.get(SAGAS).json()["error"]["code"] == "permission_denied"
    saga.refresh_from_db()
    assert saga.state == SagaInstance.State.RUNNING
    assert not SagaAction.objects.exists()


# -- the list ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_staff_list_every_saga_newest_first_with_its_fields(olivia: Api) -> None:
    now = timezone.now()
    older = saga_row(created_at=now - timedelta(minutes=5))
    newer = saga_row(created_at=now, last_error="transient: reset", deadline=now)

    response = olivia.get(SAGAS)

    assert ids(response) == [str(newer.pk), str(older.pk)]
    first = response.json()["results"][0]
    assert set(first) == LIST_FIELDS
    assert first["state"] == "running"
    assert first["subject_id"] == str(newer.subject_id)
    assert first["last_error"] == "transient: reset"


@pytest.mark.django_db
def test_the_list_filters_by_state_type_and_subject(olivia: Api) -> None:
    failed = saga_row(state="failed")
    other_type = saga_row(state="failed", type="todo-completion")
    running = saga_row(subject_id=failed.subject_id)

    assert set(ids(olivia.get(SAGAS, state="failed"))) == {str(failed.pk), str(other_type.pk)}
    assert ids(olivia.get(SAGAS, state="failed", type="test-trip")) == [str(failed.pk)]
    assert ids(olivia.get(SAGAS, type="todo-completion")) == [str(other_type.pk)]
    by_subject = olivia.get(SAGAS, subject_id=str(failed.subject_id))
    assert set(ids(by_subject)) == {str(failed.pk), str(running.pk)}
    assert ids(olivia.get(SAGAS, subject_id=str(uuid.uuid4()))) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "stuck"}, "state"),
        ({"subject_id": "not-a-uuid"}, "subject_id"),
        ({"type": "a\x00b"}, "type"),
        ({"type": "x" * 101}, "type"),
    ],
)
def test_an_invalid_filter_is_a_400_naming_it(
    olivia: Api, params: dict[str, str], field: str
) -> None:
    assert_invalid(olivia.get(SAGAS, **params), field)


@pytest.mark.django_db
def test_the_pages_walk_every_saga_once_in_order(
    olivia: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NewestSagasFirst, "page_size", 2)
    now = timezone.now()
    # Two share a creation time: the id breaks the tie, and the walk still sees both.
    made = [saga_row(created_at=now - timedelta(seconds=n // 2 * 10)) for n in range(5)]
    expected = [str(s.pk) for s in sorted(made, key=lambda s: (s.created_at, s.pk), reverse=True)]

    seen: list[str] = []
    response = olivia.get(SAGAS)
    while True:
        seen += ids(response)
        if response.json()["next"] is None:
            break
        response = olivia.client.get(response.json()["next"])

    assert seen == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage!", id="not-base64"),
        pytest.param(base64.b64encode(b"p=soon").decode(), id="position-not-a-date"),
        pytest.param(base64.b64encode(b"p=2030-01-01 00:00:00+16:00").decode(), id="offset-16h"),
    ],
)
def test_a_cursor_the_api_did_not_make_is_a_400(olivia: Api, cursor: str) -> None:
    olivia.client.raise_request_exception = False  # a crash is the 500 a user would see
    assert_invalid(olivia.get(SAGAS, cursor=cursor), "cursor")


# -- one saga ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_sagas_detail_has_its_context_step_log_and_actions(olivia: Api, bob: Api) -> None:
    saga = saga_row(state="failed", current_step="reserve")
    step_row(saga, "reserve")
    step_row(
        saga,
        "charge",
        status="failed",
        final=True,
        error_kind="business_rule",
        error_message="card declined",
    )
    step_row(saga, "reserve", phase="compensation", status="failed", final=True)
    SagaAction.objects.create(saga=saga, action="resumed", actor=olivia.user, notes="retry it")
    SagaAction.objects.create(saga=saga, action="compensated", actor=None)

    response = olivia.get(f"{SAGAS}{saga.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == LIST_FIELDS | {"context", "steps", "actions"}
    assert body["context"] == {"trip": "lisbon"}
    assert [(s["step"], s["phase"], s["status"]) for s in body["steps"]] == [
        ("reserve", "action", "completed"),
        ("charge", "action", "failed"),
        ("reserve", "compensation", "failed"),
    ]
    assert body["steps"][1] | {"started_at": None, "finished_at": None} == {
        "step": "charge",
        "phase": "action",
        "attempt": 1,
        "status": "failed",
        "final": True,
        "started_at": None,
        "finished_at": None,
        "error_kind": "business_rule",
        "error_message": "card declined",
    }
    assert [(a["action"], a["actor"], a["notes"]) for a in body["actions"]] == [
        ("resumed", "olivia", "retry it"),
        ("compensated", None, ""),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["{id}/", "{id}/resume/", "{id}/compensate/"])
def test_an_unknown_saga_is_a_404_in_the_error_shape(olivia: Api, path: str) -> None:
    method = olivia.get if path == "{id}/" else olivia.post
    response = method(SAGAS + path.format(id=uuid.uuid4()))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# -- resume and compensate -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"notes": "ok", "force": True}, "force"),
        ({"notes": 5}, "notes"),
        ({"notes": "x" * 2001}, "notes"),
    ],
)
@pytest.mark.parametrize("command", ["resume", "compensate"])
def test_a_commands_body_is_strict(olivia: Api, command: str, body: Any, field: str) -> None:
    saga = saga_row()

    assert_invalid(olivia.post(f"{SAGAS}{saga.pk}/{command}/", body), field)
    assert not SagaAction.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("command", "state"),
    [
        ("resume", "completed"),
        ("resume", "compensated"),
        ("compensate", "completed"),
        ("compensate", "compensating"),
    ],
)
def test_a_command_the_sagas_state_forbids_is_a_409(olivia: Api, command: str, state: str) -> None:
    saga = saga_row(state=state)

    response = olivia.post(f"{SAGAS}{saga.pk}/{command}/", {"notes": "please"})

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "rule_violated"
    assert state in error["message"]
    saga.refresh_from_db()
    assert saga.state == state
    assert not SagaAction.objects.exists()


def state_of(saga: SagaInstance, state: str) -> bool:
    saga.refresh_from_db()
    return saga.state == state


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("inline_worker")
def test_compensating_a_running_saga_undoes_its_steps_and_records_who(olivia: Api) -> None:
    name = f"trip-{uuid.uuid4()}"
    saga = waiting_on("charge", name)
    assert saga.state == "running"

    response = olivia.post(f"{SAGAS}{saga.pk}/compensate/", {"notes": "customer cancelled"})

    assert response.status_code == 200, response.content[:500]
    assert response.json()["state"] == "compensating"
    assert response.json()["actions"][0]["action"] == "compensated"
    assert response.json()["actions"][0]["actor"] == "olivia"
    assert response.json()["actions"][0]["notes"] == "customer cancelled"
    wait_until(lambda: state_of(saga, "compensated"), message="the saga compensated")
    assert effects("reserve", name) == 1
    assert effects("reserve.undo", name) == 1
    assert effects("charge", name) == 0  # its message, still waiting, was stale


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("inline_worker")
def test_resuming_a_failed_saga_runs_its_compensation_again(olivia: Api) -> None:
    name = f"trip-{uuid.uuid4()}"
    saga = failed_trip(name)

    response = olivia.post(f"{SAGAS}{saga.pk}/resume/", {})

    assert response.status_code == 200, response.content[:500]
    assert response.json()["state"] == "compensating"
    assert [(a["action"], a["actor"]) for a in response.json()["actions"]] == [
        ("resumed", "olivia")
    ]
    wait_until(lambda: state_of(saga, "compensated"), message="the saga compensated")
    assert effects("reserve.undo", name) == 1
