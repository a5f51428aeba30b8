"""The console's ops API: dead letters, their groups and escalations, for staff only.

Olivia is staff; Alice is an ordinary user, refused everything (403), and a client
without credentials is asked for them (401).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from apps.eventstore import store
from apps.eventstore.models import Event
from apps.eventstore.registry import RecordedEvent
from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import BreakerTransition, DeadLetter, Escalation
from apps.todos.events import TodoCreated
from tests.resilience.conftest import make_letter, request_job
from tests.resilience.handlers import JobRequested
from tests.sagas.ops import staff
from tests.support.api import Api

pytestmark = pytest.mark.django_db

LISTS = ("ops/dead-letters/", "ops/dead-letter-groups/", "ops/escalations/")


@pytest.fixture
def olivia() -> Api:
    return staff("olivia")


def job(name: str = "job") -> RecordedEvent:
    return store.append(
        stream_type="test.job",
        stream_id=uuid.uuid4(),
        expected_version=0,
        events=[JobRequested(name=name)],
        context=store.CommandContext(actor_id="tests"),
    )[0]


def letter(**fields: Any) -> DeadLetter:
    return make_letter("test.scripted", job(), **fields)


@pytest.mark.parametrize("path", LISTS)
def test_only_staff_see_the_console_api(path: str, alice: Api, olivia: Api) -> None:
    assert APIClient().get(f"/api/v1/{path}").status_code == 401
    assert alice.get(path).status_code == 403
    assert olivia.get(path).status_code == 200


@pytest.mark.parametrize("who", ["alice", "viewer"])
def test_alice_and_a_viewer_can_act_on_nothing(who: str, alice: Api) -> None:
    api = alice if who == "alice" else staff("victor", group="viewer")
    found = letter()
    escalated = Escalation.objects.create(
        rule="r", dead_letter=found, fingerprint="test", kind="transient", severity="high", count=1
    )
    for command in ("retry/", "resolve/", "discard/"):
        assert api.post(f"ops/dead-letters/{found.pk}/{command}", {}).status_code == 403
    assert api.post("ops/dead-letter-groups/test/resolve/", {}).status_code == 403
    assert api.post(f"ops/escalations/{escalated.pk}/acknowledge/", {}).status_code == 403
    assert DeadLetter.objects.get(pk=found.pk).status == "pending"
    assert Escalation.objects.get(pk=escalated.pk).acknowledged_at is None
    assert api.get("ops/dead-letters/").status_code == (403 if who == "alice" else 200)


def test_the_list_filters_by_kind_severity_status_and_age(olivia: Api) -> None:
    old = letter(kind="timeout", last_failed_at=timezone.now() - timedelta(hours=2))
    transient = letter(kind="transient", severity="low")
    resolved = letter(kind="transient", status="resolved")

    def ids(**params: Any) -> set[int]:
        response = olivia.get("ops/dead-letters/", **params)
        assert response.status_code == 200, response.json()
        return {row["id"] for row in response.json()["results"]}

    assert ids() == {old.pk, transient.pk, resolved.pk}
    assert ids(kind="transient") == {transient.pk, resolved.pk}
    assert ids(kind="transient", status="pending") == {transient.pk}
    assert ids(severity="low") == {transient.pk}
    assert ids(min_age_minutes=60) == {old.pk}
    refused = olivia.get("ops/dead-letters/", kind="gremlins")
    assert refused.status_code == 400
    assert list(refused.json()["error"]["fields"]) == ["kind"]


def test_a_letters_detail_has_its_payload_traceback_and_audit_trail(olivia: Api) -> None:
    found = letter(payload={"name": "job"}, traceback="Traceback: boom")
    assert (
        olivia.post(f"ops/dead-letters/{found.pk}/resolve/", {"notes": "fixed"}).status_code == 200
    )

    detail = olivia.get(f"ops/dead-letters/{found.pk}/").json()

    assert (detail["payload"], detail["traceback"], detail["status"]) == (
        {"name": "job"},
        "Traceback: boom",
        "resolved",
    )
    assert [(a["action"], a["actor"], a["notes"]) for a in detail["actions"]] == [
        ("resolve", "olivia", "fixed")
    ]
    assert olivia.get("ops/dead-letters/999999/").status_code == 404


def test_retry_resolve_and_discard_follow_the_letters_state(olivia: Api) -> None:
    retried, discarded = letter(), letter()

    response = olivia.post(f"ops/dead-letters/{retried.pk}/retry/", {})

    assert (response.status_code, response.json()["status"]) == (200, "retrying")
    again = olivia.post(f"ops/dead-letters/{retried.pk}/retry/", {})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "rule_violated")
    assert olivia.post(f"ops/dead-letters/{retried.pk}/retry/", {"force": True}).status_code == 400
    no_reason = olivia.post(f"ops/dead-letters/{discarded.pk}/discard/", {})
    assert (no_reason.status_code, list(no_reason.json()["error"]["fields"])) == (400, ["reason"])
    gone = olivia.post(f"ops/dead-letters/{discarded.pk}/discard/", {"reason": "a test job"})
    assert gone.json()["status"] == "discarded"
    assert gone.json()["resolution_notes"] == "a test job"


def test_a_group_is_listed_by_cause_and_resolved_as_one(olivia: Api) -> None:
    same = [letter(fingerprint="aaaa"), letter(fingerprint="aaaa", status="retrying")]
    done_before = letter(fingerprint="aaaa", status="resolved")
    other = letter(fingerprint="bbbb")

    groups = {g["fingerprint"]: g for g in olivia.get("ops/dead-letter-groups/").json()}
    assert (groups["aaaa"]["count"], groups["bbbb"]["count"]) == (2, 1)

    outcome = olivia.post("ops/dead-letter-groups/aaaa/resolve/", {"notes": "deployed fix"})

    assert outcome.status_code == 200
    assert (outcome.json()["done"], outcome.json()["skipped"]) == ([f.pk for f in same], [])
    statuses = dict(DeadLetter.objects.values_list("pk", "status"))
    assert (statuses[same[0].pk], statuses[same[1].pk]) == ("resolved", "resolved")
    assert statuses[done_before.pk] == "resolved"
    assert statuses[other.pk] == "pending"
    assert olivia.post("ops/dead-letter-groups/cccc/resolve/", {}).status_code == 404


def test_a_group_retry_retries_each_pending_letter_of_that_cause(olivia: Api) -> None:
    mine = [letter(fingerprint="dddd"), letter(fingerprint="dddd")]
    other = letter(fingerprint="eeee")

    outcome = olivia.post("ops/dead-letter-groups/dddd/retry/", {}).json()

    assert sorted(outcome["done"]) == sorted(found.pk for found in mine)
    assert set(DeadLetter.objects.filter(fingerprint="dddd").values_list("status", flat=True)) == {
        "retrying"
    }
    assert DeadLetter.objects.get(pk=other.pk).status == "pending"


def test_a_large_group_is_retried_over_calls_each_within_its_time(olivia: Api, settings) -> None:
    # A group of 500 letters once outlasted the web server's timeout and ended as a 500.
    settings.CONSOLE_GROUP_ACTION_SECONDS = 0.0001  # each call stops after one letter
    mine = [letter(fingerprint="ffff") for _ in range(3)]

    answers = []
    while not answers or answers[-1]["remaining"]:
        answer = olivia.post("ops/dead-letter-groups/ffff/retry/", {})
        assert answer.status_code == 200, answer.json()
        answers.append(answer.json())
        assert len(answers) <= len(mine), answers

    # Each call takes the oldest letters still pending (earlier calls left theirs retrying).
    first, second, third = (found.pk for found in mine)
    assert [(a["done"], a["skipped"], a["remaining"]) for a in answers] == [
        ([first], [], 2),
        ([second], [], 1),
        ([third], [], 0),
    ]
    assert set(DeadLetter.objects.filter(fingerprint="ffff").values_list("status", flat=True)) == {
        "retrying"
    }
    again = olivia.post("ops/dead-letter-groups/ffff/retry/", {}).json()
    assert (again["done"], again["skipped"], again["remaining"]) == ([], [], 0)


def test_escalations_are_listed_by_state_and_acknowledged(olivia: Api) -> None:
    found = letter()
    first = Escalation.objects.create(
        rule="critical at once",
        dead_letter=found,
        fingerprint="test",
        kind="transient",
        severity="critical",
        count=1,
    )
    seen = Escalation.objects.create(
        rule="a new failure group",
        dead_letter=found,
        fingerprint="test",
        kind="transient",
        severity="high",
        count=1,
        acknowledged_at=timezone.now(),
    )

    def ids(**params: Any) -> list[int]:
        return [row["id"] for row in olivia.get("ops/escalations/", **params).json()["results"]]

    assert ids(state="open") == [first.pk]
    assert ids(state="acknowledged") == [seen.pk]
    acknowledged = olivia.post(f"ops/escalations/{first.pk}/acknowledge/", {"notes": "on it"})
    assert (acknowledged.json()["acknowledged_by"], acknowledged.json()["notes"]) == (
        "olivia",
        "on it",
    )
    assert ids(state="open") == []
    assert olivia.post("ops/escalations/999999/acknowledge/", {}).status_code == 404


# -- breakers and projections ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_breakers_are_listed_live_and_forced_by_an_operator_only(settings: Any) -> None:
    settings.BREAKER_RESET_TIMEOUT = 600.0  # an open breaker stays open for the test
    olivia, victor = staff("olivia"), staff("victor", group="viewer")
    breaker = CircuitBreaker(f"ops-{uuid.uuid4().hex[:8]}")
    for _ in range(settings.BREAKER_FAILURE_THRESHOLD):
        breaker.record_failure(breaker.acquire(), "ConnectError: refused")

    listed = {row["name"]: row for row in olivia.get("ops/breakers/").json()}
    assert listed[breaker.name]["state"] == "open"
    assert listed[breaker.name]["next_probe_at"] is not None
    path = f"ops/breakers/{breaker.name}/"
    assert victor.post(f"{path}reset/", {}).status_code == 403
    assert breaker.snapshot().state is State.OPEN

    closed = olivia.post(f"{path}force-closed/", {"notes": "the host is back"})

    assert (closed.status_code, closed.json()["state"]) == (200, "forced_closed")
    transition = BreakerTransition.objects.filter(breaker=breaker.name).latest("id")
    assert transition.actor == olivia.user
    assert "the host is back" in transition.reason
    assert olivia.post(f"{path}reset/", {}).json()["state"] == "closed"
    assert olivia.post("ops/breakers/never-used/reset/", {}).status_code == 404


@pytest.fixture
def no_rebuild_under_way() -> Iterator[None]:
    """Free the todos projection's console rebuild lock before and after: the task this
    test queues is never run, so nothing else would release it."""
    cache.delete_many(["projection-rebuild:todos", "projection-rebuild:todos:lock"])
    yield
    cache.delete_many(["projection-rebuild:todos", "projection-rebuild:todos:lock"])


@pytest.mark.usefixtures("no_rebuild_under_way")
def test_projections_show_their_lag_and_a_rebuild_is_queued_once(olivia: Api) -> None:
    before = {row["name"]: row for row in olivia.get("ops/projections/").json()}
    assert "todos" in before
    store.append(
        stream_type="todo",
        stream_id=uuid.uuid4(),
        expected_version=0,
        events=[TodoCreated(owner_id=olivia.user.pk, title="Not projected yet")],
        context=store.CommandContext(actor_id="tests"),
    )  # no worker, no commit: the projection doesn't apply it

    after = {row["name"]: row for row in olivia.get("ops/projections/").json()}
    assert after["todos"]["lag_events"] == before["todos"]["lag_events"] + 1
    assert after["todos"]["head"] > after["todos"]["checkpoint"]
    viewer = staff("victor", group="viewer")
    assert viewer.post("ops/projections/todos/rebuild/", {}).status_code == 403

    queued = olivia.post("ops/projections/todos/rebuild/", {})

    assert queued.status_code == 202
    assert queued.json()["rebuild"]["status"] == "queued"
    [logged] = LogEntry.objects.filter(object_id="todos")
    assert (logged.user, logged.change_message) == (
        olivia.user,
        "rebuild requested from the ops API",
    )
    refused = olivia.post("ops/projections/todos/rebuild/", {})
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "rule_violated")
    assert olivia.post("ops/projections/nothing/rebuild/", {}).status_code == 404


def test_a_dry_run_through_the_api_reports_what_the_handler_would_do_and_keeps_nothing(
    olivia: Api,
) -> None:
    found = make_letter("test.scripted", request_job("api-dry"))
    events_before = Event.objects.count()
    viewer = staff("victor", group="viewer")
    assert viewer.post(f"ops/dead-letters/{found.pk}/dry-run/", {}).status_code == 403

    response = olivia.post(f"ops/dead-letters/{found.pk}/dry-run/", {})

    assert response.status_code == 200, response.json()
    report = response.json()
    assert (report["succeeded"], report["handler"]) == (True, "test.scripted")
    assert [event["type"] for event in report["events"]] == ["test.effect.recorded"]
    assert report["writes"]["eventstore_event"]["inserted"] == 1
    assert Event.objects.count() == events_before  # rolled back
    assert DeadLetter.objects.get(pk=found.pk).status == "pending"
    assert olivia.post("ops/dead-letters/999999/dry-run/", {}).status_code == 404
