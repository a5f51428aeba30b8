"""A webhook receiver that fails: retries, Retry-After, dead letters, timeouts and outages.

Each test scripts a real local receiver, fires real reminders through the real worker
(``reminder.triggered`` -> ``notification.requested`` -> ``notifications.deliver``) and then
checks what the receiver got, counted by its ``Idempotency-Key``, against the recorded
attempts, dead letters, breaker transitions and notification states.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import ThreadingHTTPServer

import pytest
from celery import current_app
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone

from apps.eventstore.models import Event
from apps.notifications.models import NotificationState
from apps.reminders.models import ReminderState
from apps.resilience.breakers import CircuitBreaker, State
from apps.resilience.models import Attempt, BreakerTransition, DeadLetter, Delivery
from apps.resilience.services import dead_letters
from tests.support.api import Api
from tests.support.broker import free_port
from tests.support.http import ControlledServer, Received, Reply
from tests.support.timings import TEST_TIMINGS
from tests.support.waiting import wait_until
from tests.support.worker import settle

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]

HANDLER = "notifications.deliver"
# Every ControlledServer listens on 127.0.0.1, so all these tests share one breaker.
BREAKER = "webhook:127.0.0.1"
SCALE: float = TEST_TIMINGS["RESILIENCE_DELAY_SCALE"]
RESET_TIMEOUT: float = TEST_TIMINGS["BREAKER_RESET_TIMEOUT"]
READ_TIMEOUT: float = TEST_TIMINGS["WEBHOOK_READ_TIMEOUT"]
# Clock reading and rounding between the server thread, the worker and Celery's timer.
CLOCK_SLACK = 0.05


class Receiver(ControlledServer):
    """A ControlledServer that also keeps the status it answered each request with, and can
    listen on a port of the test's choosing (to come back where a receiver was down)."""

    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self.answered: list[tuple[Received, int]] = []
        if port:
            self._server.server_close()
            self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next(self, received: Received) -> Reply:
        reply = super()._next(received)
        with self._lock:
            self.answered.append((received, reply.status))
        return reply

    def keys_answered(self) -> list[tuple[str, int]]:
        """Return (Idempotency-Key, status) of every request, in arrival order."""
        with self._lock:
            return [(r.headers.get("Idempotency-Key", ""), status) for r, status in self.answered]

    def delivered(self) -> Counter[str]:
        """Return how many 2xx answers each Idempotency-Key got."""
        return Counter(key for key, status in self.keys_answered() if 200 <= status < 300)


@pytest.fixture(autouse=True)
def fresh_breaker(worker: object) -> Iterator[CircuitBreaker]:
    """Start (and leave) the shared webhook breaker closed, with no cooldown in force."""
    breaker = CircuitBreaker(BREAKER)
    breaker.reset()
    cache.delete(f"cooldown:{BREAKER}")
    yield breaker
    settle()
    breaker.reset()
    cache.delete(f"cooldown:{BREAKER}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def operator() -> object:
    return get_user_model().objects.create_user("operator", "operator@example.test")


def use_webhook(api: Api, url: str) -> str:
    response = api.patch("me/", {"webhook_url": url})
    assert response.status_code == 200, response.json()
    return response.json()["webhook_secret"]


def fire_reminders(api: Api, count: int = 1, title: str = "Call mum") -> list[uuid.UUID]:
    """Schedule ``count`` webhook reminders, make them due, fire them in one sweep of the
    worker; return the ids of the notifications they requested."""
    todo = api.create(title=title)
    soon = (timezone.now() + timedelta(minutes=5)).isoformat()
    for _ in range(count):
        response = api.post(
            f"todos/{todo['id']}/reminders/", {"remind_at": soon, "channels": ["webhook"]}
        )
        assert response.status_code == 201, response.json()
    ReminderState.objects.filter(todo_id=todo["id"]).update(
        remind_at=timezone.now() - timedelta(seconds=1)
    )
    current_app.send_task("backstop.reminders.fire_due", queue="maintenance")
    states = NotificationState.objects.filter(owner_id=api.user.pk, channel="webhook")
    wait_until(lambda: states.count() == count, message=f"{count} notifications requested")
    return list(states.values_list("notification_id", flat=True))


def requested_event_id(notification_id: uuid.UUID) -> uuid.UUID:
    return Event.objects.get(stream_id=notification_id, type="notification.requested").event_id


def delivery_of(notification_id: uuid.UUID) -> Delivery | None:
    return Delivery.objects.filter(
        handler=HANDLER, event_id=requested_event_id(notification_id)
    ).first()


def wait_for_delivery(notification_id: uuid.UUID, *statuses: str, timeout: float = 20) -> Delivery:
    def reached() -> Delivery | None:
        found = delivery_of(notification_id)
        return found if found is not None and found.status in statuses else None

    return wait_until(reached, timeout=timeout, message=f"{HANDLER} to reach {statuses}")


def attempts_of(notification_id: uuid.UUID) -> list[Attempt]:
    return list(
        Attempt.objects.filter(
            delivery__handler=HANDLER, delivery__event_id=requested_event_id(notification_id)
        )
    )


def transitions() -> list[tuple[str, str]]:
    rows = BreakerTransition.objects.filter(breaker=BREAKER).exclude(reason="manual reset")
    return list(rows.order_by("id").values_list("from_state", "to_state"))


def test_503_three_times_then_200_is_delivered_once_after_a_half_open_probe(
    alice: Api, receiver: Receiver, fresh_breaker: CircuitBreaker
) -> None:
    receiver.then(Reply(503), Reply(503), Reply(503))  # then the default 200
    use_webhook(alice, receiver.url + "/hook")

    [nid] = fire_reminders(alice)

    found = wait_for_delivery(nid, Delivery.Status.SUCCEEDED)
    key = str(nid)
    assert receiver.keys_answered() == [(key, 503), (key, 503), (key, 503), (key, 200)]
    assert receiver.delivered() == {key: 1}
    log = attempts_of(nid)
    transient, deferred = log[:3], log[3:]
    assert [(a.number, a.kind, a.outcome) for a in transient] == [
        (1, "transient", "retry"), (2, "transient", "retry"), (3, "transient", "retry"),
    ]  # fmt: skip
    assert all(a.exception_type == "HTTPStatusError" for a in transient)
    # Exponential full jitter: the ceilings double, each countdown is at most its ceiling.
    assert [a.ceiling for a in transient] == pytest.approx([1 * SCALE, 2 * SCALE, 4 * SCALE])
    assert all(0 <= a.countdown <= a.ceiling for a in transient)
    # The third 503 reached the breaker's threshold: the next run was deferred until the
    # breaker half-opened, spending no attempt and never calling the receiver.
    assert deferred, "the run after the breaker opened should have been deferred"
    assert {(a.number, a.kind, a.outcome) for a in deferred} == {(3, "unavailable", "defer")}
    assert all(a.exception_type == "Unavailable" for a in deferred)
    assert all(0 < a.countdown <= RESET_TIMEOUT + CLOCK_SLACK for a in deferred)
    assert found.attempts == 3
    # The 200 was the half-open probe: a reset timeout after the last 503.
    received = list(receiver.received)
    assert received[3].at - received[2].at >= RESET_TIMEOUT - CLOCK_SLACK
    assert transitions() == [("closed", "open")]
    # One successful probe of the two it takes to close.
    assert fresh_breaker.snapshot().state is State.HALF_OPEN
    state = NotificationState.objects.get(notification_id=nid)
    assert (state.status, state.last_error) == ("sent", "")
    assert state.target == receiver.url.removeprefix("http://")  # the host, no path
    # Four requests were made (three failed, one succeeded); a deferral makes none.
    assert state.attempts == len(received) == 4


def test_429_with_retry_after_seconds_is_retried_no_sooner_than_asked(
    alice: Api, receiver: Receiver
) -> None:
    receiver.then(Reply(429, {"Retry-After": "2"}))
    use_webhook(alice, receiver.url + "/hook")

    [nid] = fire_reminders(alice)

    wait_for_delivery(nid, Delivery.Status.SUCCEEDED)
    [first] = attempts_of(nid)
    assert (first.number, first.kind, first.outcome) == (1, "rate_limited", "retry")
    # The receiver's Retry-After is taken as is: RESILIENCE_DELAY_SCALE does not shrink it.
    assert first.countdown == pytest.approx(2.0)
    assert first.ceiling == pytest.approx(2.0)
    key = str(nid)
    assert receiver.keys_answered() == [(key, 429), (key, 200)]
    received = list(receiver.received)
    assert 2.0 - CLOCK_SLACK <= received[1].at - received[0].at < 2.0 + 3.0
    assert transitions() == []  # being asked to slow down is not a failure
    state = NotificationState.objects.get(notification_id=nid)
    assert (state.status, state.attempts) == ("sent", 2)


def test_429_with_an_http_date_retry_after_is_retried_no_sooner_than_that_date(
    alice: Api, receiver: Receiver
) -> None:
    header = format_datetime(datetime.now(tz=UTC) + timedelta(seconds=2), usegmt=True)
    not_before = parsedate_to_datetime(header).timestamp()  # whole seconds: 1 to 2 s away
    receiver.then(Reply(429, {"Retry-After": header}))
    use_webhook(alice, receiver.url + "/hook")

    [nid] = fire_reminders(alice)

    wait_for_delivery(nid, Delivery.Status.SUCCEEDED)
    [first] = attempts_of(nid)
    assert (first.number, first.kind, first.outcome) == (1, "rate_limited", "retry")
    assert 0 < first.countdown <= 3.0
    key = str(nid)
    assert receiver.keys_answered() == [(key, 429), (key, 200)]
    received = list(receiver.received)
    assert received[0].at < not_before
    assert received[1].at >= not_before - CLOCK_SLACK
    assert received[1].at - received[0].at >= first.countdown - CLOCK_SLACK
    assert NotificationState.objects.get(notification_id=nid).status == "sent"


def test_400_is_dead_lettered_as_validation_after_exactly_one_request(
    alice: Api, receiver: Receiver, fresh_breaker: CircuitBreaker
) -> None:
    receiver.then(Reply(400))
    use_webhook(alice, receiver.url + "/hook")

    [nid] = fire_reminders(alice)

    found = wait_for_delivery(nid, Delivery.Status.DEAD_LETTERED)
    wait_until(
        lambda: NotificationState.objects.filter(notification_id=nid, status="failed").exists(),
        message="the notification to be recorded failed",
    )
    settle()  # nothing is left to run: no retry is pending anywhere
    assert receiver.keys_answered() == [(str(nid), 400)]
    assert [(a.number, a.kind, a.outcome) for a in attempts_of(nid)] == [
        (1, "validation", "dead_letter")
    ]
    assert (found.attempts, found.next_attempt_at) == (1, None)
    letter = DeadLetter.objects.get(handler=HANDLER)
    assert (letter.kind, letter.attempts, letter.next_retry_at) == ("validation", 1, None)
    assert (letter.event_id, letter.stream_id) == (requested_event_id(nid), nid)
    assert "400" in letter.message
    state = NotificationState.objects.get(notification_id=nid)
    assert state.status == "failed"
    assert state.last_error == "the webhook endpoint answered 400"  # the detail: the letter
    assert state.sent_at is None
    [failed] = Event.objects.filter(stream_id=nid, type="notification.failed")
    assert failed.stream_type == "notification"
    assert failed.data["kind"] == "validation"
    assert "400" in failed.data["error"]
    assert not Event.objects.filter(stream_id=nid, type="notification.sent").exists()
    # A rejected request says nothing about the receiver's health.
    assert transitions() == []
    assert fresh_breaker.snapshot().state is State.CLOSED


def test_a_receiver_hanging_past_the_read_timeout_is_a_timeout_attempt_then_delivered(
    alice: Api, receiver: Receiver
) -> None:
    receiver.then(Reply(delay=4))  # the worker gives up reading after 2 s
    use_webhook(alice, receiver.url + "/hook")

    [nid] = fire_reminders(alice)

    found = wait_for_delivery(nid, Delivery.Status.SUCCEEDED)
    [first] = attempts_of(nid)
    assert (first.number, first.kind, first.outcome) == (1, "timeout", "retry")
    assert first.exception_type == "ReadTimeout"
    assert first.countdown == pytest.approx(5 * SCALE)  # linear: base 5 s, scaled
    assert found.attempts == 1
    received = list(receiver.received)
    assert [r.headers["Idempotency-Key"] for r in received] == [str(nid)] * 2
    assert received[1].at - received[0].at >= READ_TIMEOUT - CLOCK_SLACK
    assert transitions() == []  # one failure of the three it takes to open
    state = NotificationState.objects.get(notification_id=nid)
    assert (state.status, state.attempts) == ("sent", 2)


def test_a_receiver_down_opens_the_breaker_defers_the_rest_and_all_arrive_once_when_back(
    alice: Api, fresh_breaker: CircuitBreaker
) -> None:
    port = free_port()  # nothing listens there: every connection is refused
    use_webhook(alice, f"http://127.0.0.1:{port}/hook")

    nids = fire_reminders(alice, count=4)

    wait_until(
        lambda: ("closed", "open") in transitions(), message="the breaker to open", timeout=20
    )
    wait_until(
        lambda: Attempt.objects.filter(
            delivery__handler=HANDLER, outcome="defer", kind="unavailable"
        ).exists(),
        message="a delivery deferred behind the open breaker",
    )
    back = Receiver(port)
    back.start()
    try:
        wait_until(
            lambda: (
                NotificationState.objects.filter(notification_id__in=nids, status="sent").count()
                == len(nids)
            ),
            timeout=30,
            message="every notification to be sent once the receiver is back",
        )
        for nid in nids:
            wait_for_delivery(nid, Delivery.Status.SUCCEEDED)
        settle()
        answered = back.keys_answered()
    finally:
        back.stop()

    # Every notification arrived exactly once, and nothing else did.
    assert back.delivered() == {str(nid): 1 for nid in nids}
    assert sorted(answered) == sorted((str(nid), 200) for nid in nids)
    history = transitions()
    assert history[0] == ("closed", "open")
    # Only probes can succeed once it opened; two successful ones closed it again.
    assert history[-1] == ("half_open", "closed")
    assert fresh_breaker.snapshot().state is State.CLOSED
    assert not DeadLetter.objects.filter(handler=HANDLER).exists()
    deferrals = 0
    for nid in nids:
        log = attempts_of(nid)
        spent = 0
        for attempt in log:
            if attempt.outcome == "retry":
                spent += 1
                assert (attempt.kind, attempt.exception_type) == ("transient", "ConnectError")
                assert attempt.number == spent
            else:
                # A deferral spends nothing: it carries the count spent before it.
                assert (attempt.kind, attempt.outcome) == ("unavailable", "defer")
                assert attempt.number == spent
                deferrals += 1
        assert delivery_of(nid).attempts == spent < 5
        state = NotificationState.objects.get(notification_id=nid)
        assert state.status == "sent"
        assert state.last_error == ""
    assert deferrals >= 1
    bodies = [json.loads(r.body) for r in back.received]
    assert all(b["event_type"] == "reminder.triggered" for b in bodies)


# -- dead letters retried -----------------------------------------------------------------


def dead_lettered_failed(nid: uuid.UUID) -> DeadLetter:
    """Wait for the notification's delivery to be dead-lettered and recorded failed."""
    wait_for_delivery(nid, Delivery.Status.DEAD_LETTERED)
    wait_until(
        lambda: NotificationState.objects.filter(notification_id=nid, status="failed").exists(),
        message="the notification to be recorded failed",
    )
    return DeadLetter.objects.get(handler=HANDLER, stream_id=nid)


def event_types(nid: uuid.UUID) -> list[str]:
    return list(
        Event.objects.filter(stream_id=nid).order_by("version").values_list("type", flat=True)
    )


def test_retrying_the_dead_letter_of_a_failed_notification_sends_it_once_with_the_same_key(
    alice: Api, receiver: Receiver, operator: object
) -> None:
    receiver.default = Reply(400)  # the receiver rejects everything until it is fixed
    use_webhook(alice, receiver.url + "/hook")
    [nid] = fire_reminders(alice)
    letter = dead_lettered_failed(nid)
    receiver.default = Reply(200)  # fixed

    dead_letters.retry(letter.pk, actor=operator)

    wait_until(
        lambda: DeadLetter.objects.filter(pk=letter.pk, status="resolved").exists(),
        message="the dead letter to be resolved by its retry",
    )
    settle()
    key = str(nid)
    assert receiver.keys_answered() == [(key, 400), (key, 200)]
    assert receiver.delivered() == {key: 1}
    rejected, accepted = receiver.received
    # The very same request again: a receiver can drop it by its key if it had kept the first.
    assert accepted.body == rejected.body
    assert accepted.headers["X-Backstop-Signature"] == rejected.headers["X-Backstop-Signature"]
    resolved = DeadLetter.objects.get(pk=letter.pk)
    assert resolved.resolution_notes == "retry succeeded"
    state = NotificationState.objects.get(notification_id=nid)
    assert (state.status, state.attempts, state.last_error) == ("sent", 2, "")
    assert state.target == receiver.url.removeprefix("http://")  # the host, no path
    assert state.sent_at is not None
    assert event_types(nid) == [
        "notification.requested",
        "notification.failed",
        "notification.retried",
        "notification.sent",
    ]
    listed = alice.get("notifications/").json()["results"]
    assert [(n["id"], n["status"], n["attempts"], n["last_error"]) for n in listed] == [
        (key, "sent", 2, "")
    ]


def test_a_retried_notification_that_fails_again_is_failed_again_with_the_new_error(
    alice: Api, receiver: Receiver, operator: object
) -> None:
    receiver.then(Reply(400), Reply(422))
    use_webhook(alice, receiver.url + "/hook")
    [nid] = fire_reminders(alice)
    letter = dead_lettered_failed(nid)

    dead_letters.retry(letter.pk, actor=operator)

    wait_until(
        lambda: NotificationState.objects.filter(
            notification_id=nid, status="failed", last_error__contains="422"
        ).exists(),
        message="the notification to be recorded failed again",
    )
    settle()
    key = str(nid)
    assert receiver.keys_answered() == [(key, 400), (key, 422)]
    again = DeadLetter.objects.get(pk=letter.pk)
    assert (again.status, again.attempts) == ("pending", 2)
    state = NotificationState.objects.get(notification_id=nid)
    assert (state.attempts, state.sent_at) == (2, None)
    assert state.last_error == "the webhook endpoint answered 422"
    assert event_types(nid) == [
        "notification.requested",
        "notification.failed",
        "notification.retried",
        "notification.failed",
    ]
    first, second = Event.objects.filter(stream_id=nid, type="notification.failed").order_by(
        "version"
    )
    assert ("400" in first.data["error"], "422" in second.data["error"]) == (True, True)
    listed = alice.get("notifications/").json()["results"]
    assert [(n["status"], n["attempts"], n["sent_at"]) for n in listed] == [("failed", 2, None)]
    assert "422" in listed[0]["last_error"]
