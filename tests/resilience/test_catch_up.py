"""`manage.py catch_up_handler`: a handler added after its events were stored gets one
queued delivery per event of its types, once, and the reconciler (or --send-now) sends them."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from celery import Celery, current_app
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.eventstore import relay, store
from apps.eventstore.registry import DomainEvent, RecordedEvent, event
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext
from apps.eventstore.subscriptions import handles
from apps.resilience.models import Delivery, ProcessedMessage
from tests.eventstore.counter import Counter
from tests.resilience.conftest import request_job
from tests.support.broker import drain, free_port

pytestmark = pytest.mark.django_db
Status = Delivery.Status
PROBE = "test.catch-up-probe"
PROBE_QUEUE = "test-catch-up-probe"


@event("test.catch-up.noted")
class Noted(DomainEvent):
    n: int


@handles(Noted, name=PROBE, queue=PROBE_QUEUE)
def catch_up_probe(recorded: RecordedEvent) -> None:
    """Never run: its messages stay in their own queue for the tests to count."""


@pytest.fixture(autouse=True)
def _nothing_published(settings) -> None:
    """Store events as if no relay ran: nothing is published, no pair is recorded."""
    settings.OUTBOX_PUBLISH_ON_COMMIT = False


@pytest.fixture
def probe_queue() -> Iterator[str]:
    drain(django_settings.CELERY_BROKER_URL, PROBE_QUEUE)
    yield PROBE_QUEUE
    drain(django_settings.CELERY_BROKER_URL, PROBE_QUEUE)


def _catch_up(*args: str) -> tuple[str, str]:
    """Run the command; return what it printed on stdout and on stderr (its progress)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("catch_up_handler", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _note(count: int) -> list[RecordedEvent]:
    stream = uuid.uuid4()
    return store.append(
        stream_type="test.note",
        stream_id=stream,
        expected_version=0,
        events=[Noted(n=n) for n in range(count)],
        context=CommandContext(actor_id="tests"),
    )


def _pairs(handler: str) -> dict[uuid.UUID, str]:
    return dict(Delivery.objects.filter(handler=handler).values_list("event_id", "status"))


def _other_type_event() -> uuid.UUID:
    """Store a ``counter.opened`` event, a type no test.scripted subscription covers."""
    [recorded] = Repository(Counter).save(Counter.open("not-for-scripted"), CommandContext())
    return recorded.event_id


def test_a_late_handler_gets_one_queued_delivery_per_event_of_its_types() -> None:
    jobs = [request_job(f"before-{n}") for n in range(3)]
    other = _other_type_event()
    done = Delivery.objects.create(
        handler="test.scripted", event_id=jobs[0].event_id, status=Status.SUCCEEDED
    )
    before = timezone.now()

    out, _ = _catch_up("test.scripted", "--no-progress")

    assert _pairs("test.scripted") == {
        jobs[0].event_id: Status.SUCCEEDED,  # had a row: left alone
        jobs[1].event_id: Status.QUEUED,
        jobs[2].event_id: Status.QUEUED,
    }
    assert not Delivery.objects.filter(event_id=other).exists()
    assert not Delivery.objects.exclude(handler="test.scripted").exists()  # nor other handlers
    queued = Delivery.objects.get(handler="test.scripted", event_id=jobs[1].event_id)
    due = timedelta(seconds=django_settings.LEDGER_QUEUED_SECONDS)
    assert before + due <= queued.reconcile_at <= timezone.now() + due  # the reconciler's turn
    assert (queued.starts, queued.resends) == (0, 0)
    assert "Queued 2 deliveries to test.scripted" in out
    done.refresh_from_db()
    assert done.status == Status.SUCCEEDED


def test_running_it_again_queues_nothing_new() -> None:
    jobs = [request_job(f"twice-{n}") for n in range(2)]
    _catch_up("test.scripted", "--no-progress")
    first = dict(Delivery.objects.filter(handler="test.scripted").values_list("pk", "reconcile_at"))

    out, _ = _catch_up("test.scripted", "--no-progress")

    assert "Queued 0 deliveries" in out
    again = dict(Delivery.objects.filter(handler="test.scripted").values_list("pk", "reconcile_at"))
    assert again == first
    assert set(_pairs("test.scripted")) == {j.event_id for j in jobs}


def test_a_dry_run_counts_what_it_would_queue_and_writes_nothing() -> None:
    for n in range(3):
        request_job(f"dry-{n}")

    out, _ = _catch_up("test.scripted", "--dry-run", "--no-progress")

    assert "Would queue 3 deliveries to test.scripted" in out
    assert not Delivery.objects.exists()


def test_small_batches_cover_every_event_and_show_progress() -> None:
    notes = _note(5)

    out, err = _catch_up(PROBE, "--batch", "2")

    assert set(_pairs(PROBE)) == {n.event_id for n in notes}
    assert "Queued 5 deliveries" in out
    assert "5/5" in err  # the progress bar reached the end


def test_since_position_skips_the_events_up_to_it() -> None:
    notes = _note(4)

    _catch_up(PROBE, "--since-position", str(notes[1].position), "--no-progress")

    assert set(_pairs(PROBE)) == {n.event_id for n in notes[2:]}


def test_events_the_handler_already_processed_are_not_queued() -> None:
    notes = _note(2)
    ProcessedMessage.objects.create(handler=PROBE, event_id=notes[0].event_id)

    _catch_up(PROBE, "--no-progress")

    assert set(_pairs(PROBE)) == {notes[1].event_id}


def test_an_unknown_handler_is_an_error_naming_the_registered_ones() -> None:
    with pytest.raises(CommandError) as error:
        _catch_up("test.no-such-handler")

    assert "test.no-such-handler" in str(error.value)
    assert "test.scripted" in str(error.value)
    assert PROBE in str(error.value)


def test_a_projections_live_path_is_refused_naming_its_rebuild() -> None:
    with pytest.raises(CommandError) as error:
        _catch_up("todos.projection")

    assert "rebuild_projection todos" in str(error.value)
    assert not Delivery.objects.filter(handler="todos.projection").exists()


def test_without_send_now_nothing_is_sent(probe_queue: str) -> None:
    _note(2)

    _catch_up(PROBE, "--no-progress")

    assert drain(django_settings.CELERY_BROKER_URL, probe_queue) == []


def test_send_now_sends_one_message_per_queued_pair(probe_queue: str) -> None:
    notes = _note(3)
    Delivery.objects.create(handler=PROBE, event_id=notes[0].event_id, status=Status.SUCCEEDED)

    out, _ = _catch_up(PROBE, "--send-now", "--no-progress")

    messages = drain(django_settings.CELERY_BROKER_URL, probe_queue)
    assert sorted((m["task"], m["id"], tuple(m["args"])) for m in messages) == sorted(
        (relay.DELIVER_TASK, relay.delivery_task_id(PROBE, n.event_id), (PROBE, str(n.event_id)))
        for n in notes[1:]
    )
    assert "sent 2 now, 0 left to the reconciler" in out
    # Still queued: if a message is lost, the reconciler sends the pair again.
    assert set(_pairs(PROBE).values()) == {Status.SUCCEEDED, Status.QUEUED}


@contextmanager
def _broker_down() -> Iterator[None]:
    """Make the current Celery app one whose broker isn't there, then put the real one back.

    (A new app rather than a changed ``broker_url``: the environment's CELERY_BROKER_URL
    wins over ``conf.broker_url``, and the working app keeps its producer pool.)
    """
    working = current_app._get_current_object()
    down = Celery("broker-down", set_as_current=False)
    down.conf.broker_write_url = f"redis://127.0.0.1:{free_port()}/0"
    down.set_current()
    try:
        yield
    finally:
        working.set_current()
        down.close()


def test_sends_that_fail_are_left_queued_for_the_reconciler() -> None:
    notes = _note(2)

    with _broker_down():
        out, _ = _catch_up(PROBE, "--send-now", "--no-progress")

    assert "sent 0 now, 2 left to the reconciler" in out
    assert _pairs(PROBE) == {n.event_id: Status.QUEUED for n in notes}
