"""POST /api/v1/todos/ with an Idempotency-Key: the same request sent again has one effect.

The first response is kept with the key for 24 hours and replayed to every repeat, even
ten repeats racing each other; a different body under the same key is refused.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.eventstore.models import Event
from apps.resilience.models import IdempotencyRecord
from tests.support.api import Api
from tests.support.threads import run_in_threads
from tests.todos.conftest import projected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

BODY = {"title": "Renew passport", "priority": "high", "tags": ["Admin"]}


def post_with_key(api: Api, key: str, body: Any) -> Any:
    return api.post("todos/", body, **{"Idempotency-Key": key})


def created_events(api: Api) -> int:
    return Event.objects.filter(type="todo.created", data__owner_id=api.user.pk).count()


def test_a_repeated_request_replays_the_first_response_and_creates_once(alice: Api) -> None:
    first = post_with_key(alice, "passport-1", BODY)
    again = post_with_key(alice, "passport-1", BODY)

    assert (first.status_code, again.status_code) == (201, 201), again.json()
    assert first.headers["Idempotent-Replayed"] == "false"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["ETag"] == first.headers["ETag"] == '"1"'
    assert first.json()["title"] == "Renew passport"
    assert created_events(alice) == 1
    projected(first.json()["id"], 1)
    listed = alice.get("todos/").json()["results"]
    assert [todo["id"] for todo in listed] == [first.json()["id"]]


def test_the_body_digest_ignores_key_order(alice: Api) -> None:
    first = post_with_key(alice, "order", {"title": "A", "priority": "low"})
    again = post_with_key(alice, "order", {"priority": "low", "title": "A"})

    assert again.status_code == 201, again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert created_events(alice) == 1


def test_the_same_key_with_a_different_body_is_refused(alice: Api) -> None:
    first = post_with_key(alice, "passport-2", BODY)
    assert first.status_code == 201, first.json()

    reused = post_with_key(alice, "passport-2", {**BODY, "title": "Renew driving licence"})

    assert reused.status_code == 422, reused.json()
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert created_events(alice) == 1
    # The key still belongs to the first request.
    again = post_with_key(alice, "passport-2", BODY)
    assert (again.status_code, again.json()["id"]) == (201, first.json()["id"])


def test_the_same_key_from_another_user_is_independent(alice: Api, bob: Api) -> None:
    hers = post_with_key(alice, "shared-key", BODY)
    his = post_with_key(bob, "shared-key", BODY)

    assert (hers.status_code, his.status_code) == (201, 201), his.json()
    assert his.headers["Idempotent-Replayed"] == "false"
    assert his.json()["id"] != hers.json()["id"]
    assert (created_events(alice), created_events(bob)) == (1, 1)
    projected(his.json()["id"], 1)
    assert [t["id"] for t in bob.get("todos/").json()["results"]] == [his.json()["id"]]
    assert bob.get(f"todos/{hers.json()['id']}/").status_code == 404


def test_a_request_that_fails_validation_does_not_burn_the_key(alice: Api) -> None:
    refused = post_with_key(alice, "retry-after-fix", {"title": ""})
    assert refused.status_code == 400, refused.json()
    assert refused.json()["error"]["code"] == "invalid"
    assert "title" in refused.json()["error"]["fields"]
    assert not IdempotencyRecord.objects.filter(user_id=alice.user.pk).exists()

    fixed = post_with_key(alice, "retry-after-fix", BODY)

    assert fixed.status_code == 201, fixed.json()
    assert fixed.headers["Idempotent-Replayed"] == "false"
    assert created_events(alice) == 1
    replayed = post_with_key(alice, "retry-after-fix", BODY)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["id"] == fixed.json()["id"]


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_a_key_of_the_wrong_length_is_refused(alice: Api, key: str) -> None:
    response = post_with_key(alice, key, BODY)

    assert response.status_code == 400, response.json()
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert created_events(alice) == 0


def test_ten_concurrent_requests_with_the_same_key_create_one_todo(alice: Api) -> None:
    token = alice.token
    racers = 10
    barrier = threading.Barrier(racers, timeout=20)

    def send() -> tuple[int, dict[str, Any], str]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        barrier.wait()
        response = client.post(
            "/api/v1/todos/", BODY, format="json", headers={"Idempotency-Key": "race"}
        )
        return response.status_code, response.json(), response.headers["Idempotent-Replayed"]

    outcomes = [future.result() for future in run_in_threads(send, [()] * racers)]

    assert [status for status, _, _ in outcomes] == [201] * racers, outcomes
    assert len({body["id"] for _, body, _ in outcomes}) == 1
    assert sorted(replayed for _, _, replayed in outcomes) == ["false"] + ["true"] * (racers - 1)
    assert created_events(alice) == 1
    assert IdempotencyRecord.objects.filter(user_id=alice.user.pk, key="race").count() == 1


def test_a_key_older_than_24_hours_is_forgotten(alice: Api) -> None:
    first = post_with_key(alice, "yesterday", BODY)
    assert first.status_code == 201, first.json()
    IdempotencyRecord.objects.filter(user_id=alice.user.pk, key="yesterday").update(
        created_at=timezone.now() - timedelta(hours=25)
    )

    again = post_with_key(alice, "yesterday", BODY)

    assert again.status_code == 201, again.json()
    assert again.headers["Idempotent-Replayed"] == "false"
    assert again.json()["id"] != first.json()["id"]
    assert created_events(alice) == 2
    # The key now remembers the new request.
    third = post_with_key(alice, "yesterday", BODY)
    assert third.headers["Idempotent-Replayed"] == "true"
    assert third.json()["id"] == again.json()["id"]


def test_a_key_younger_than_24_hours_is_still_remembered(alice: Api) -> None:
    first = post_with_key(alice, "this-morning", BODY)
    IdempotencyRecord.objects.filter(user_id=alice.user.pk, key="this-morning").update(
        created_at=timezone.now() - timedelta(hours=23)
    )

    again = post_with_key(alice, "this-morning", BODY)

    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert created_events(alice) == 1
