"""The delivery ledger: what the relay records, what the reconciler re-sends, and the
delivery defects it closes (lost replays, long waits in the broker, time-limit kills)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.eventstore import relay
from apps.eventstore.models import OutboxMessage
from apps.eventstore.registry import RecordedEvent
from apps.eventstore.subscriptions import all_subscriptions, subscribers, subscription
from apps.resilience.models import Attempt, DeadLetter, Delivery
from apps.resilience.services import dead_letters, ledger
from tests.eventstore.counter import CounterOpened
from tests.resilience.conftest import (
    dead_letter,
    make_letter,
    request_job,
    store_raw_event,
    wait_for_status,
)
from tests.resilience.handlers import effects, script
from tests.support.broker import celery_broker, free_port
from tests.support.locks import someone_waits
from tests.support.probe import PROBE, open_counters, probe_messages
from tests.support.threads import run_in_threads
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
Job = Callable[..., RecordedEvent]
Status = Delivery.Status


def _probe_ids(queue: str) -> list[str]:
    return list(probe_messages().elements())


def _make_due(handler: str, event_id: uuid.UUID) -> None:
    """Let the pair's time pass, with its queue quiet meanwhile (so a queued pair is lost,
    not waiting behind a backlog)."""
    now = timezone.now()
    Delivery.objects.filter(handler=handler, event_id=event_id).update(
        reconcile_at=now - timedelta(seconds=1)
    )
    queue = subscription(handler).queue
    Delivery.objects.filter(
        handler__in=[s.name for s in all_subscriptions() if s.queue == queue]
    ).exclude(status=Status.QUEUED).update(
        updated_at=now - timedelta(seconds=settings.LEDGER_QUEUED_SECONDS + 1)
    )


def test_publishing_records_one_queued_delivery_per_subscribed_handler(probe_queue: str) -> None:
    before = timezone.now()
    [opened] = open_counters(1)

    rows = {d.handler: d for d in Delivery.objects.filter(event_id=opened.event_id)}
    assert set(rows) == {sub.name for sub in subscribers(CounterOpened.event_type)}
    probe = rows[PROBE]
    assert (probe.status, probe.starts) == (Status.QUEUED, 0)
    expected = before + timedelta(seconds=settings.LEDGER_QUEUED_SECONDS)
    assert (
        expected
        <= probe.reconcile_at
        <= timezone.now() + timedelta(seconds=settings.LEDGER_QUEUED_SECONDS)
    )


def test_the_ledger_rows_commit_with_the_published_mark_or_not_at_all(
    probe_queue: str, settings
) -> None:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    [opened] = open_counters(1)

    def broken(pairs: list[tuple[str, uuid.UUID]]) -> None:
        ledger.expect(pairs)
        raise RuntimeError("the ledger write failed")

    relay.record_deliveries_with(broken)
    try:
        with pytest.raises(RuntimeError):
            relay.publish_pending()
    finally:
        relay.record_deliveries_with(ledger.expect)

    assert OutboxMessage.objects.get(event__event_id=opened.event_id).published_at is None
    assert not Delivery.objects.filter(event_id=opened.event_id, handler=PROBE).exists()
    assert relay.publish_pending() == 1  # the sweep publishes it, ledger and all
    assert Delivery.objects.filter(event_id=opened.event_id, handler=PROBE).exists()


def test_the_reconciler_resends_only_pairs_past_their_time_then_backs_off(
    probe_queue: str,
) -> None:
    due, _not_due = open_counters(2)
    _probe_ids(probe_queue)  # the relay's own messages
    _make_due(PROBE, due.event_id)

    resent = [r for r in ledger.reconcile() if r.handler == PROBE]

    assert [r.event_id for r in resent] == [due.event_id]
    assert _probe_ids(probe_queue) == [str(due.event_id)]
    row = Delivery.objects.get(handler=PROBE, event_id=due.event_id)
    assert row.resends == 1
    assert row.last_resent_at is not None
    # backing off: the next re-send of a still-queued pair waits twice the threshold
    wait = (row.reconcile_at - row.last_resent_at).total_seconds()
    assert wait == pytest.approx(2 * settings.LEDGER_QUEUED_SECONDS, abs=1)
    assert not [r for r in ledger.reconcile() if r.handler == PROBE]


def _started(event_id: uuid.UUID, *, sent_ago: float, moved_ago: float) -> None:
    """Mark the probe's pair of ``event_id`` as started: sent and last moved that long ago."""
    now = timezone.now()
    Delivery.objects.filter(handler=PROBE, event_id=event_id).update(
        status=Status.SUCCEEDED,
        starts=1,
        finishes=1,
        reconcile_at=None,
        created_at=now - timedelta(seconds=sent_ago),
        updated_at=now - timedelta(seconds=moved_ago),
    )


def _queued(event_id: uuid.UUID, *, sent_ago: float) -> None:
    Delivery.objects.filter(handler=PROBE, event_id=event_id).update(
        updated_at=timezone.now() - timedelta(seconds=sent_ago),
        reconcile_at=timezone.now() - timedelta(seconds=1),
    )


def _probe_resent() -> list[uuid.UUID]:
    return [r.event_id for r in ledger.reconcile() if r.handler == PROBE]


def test_a_queued_pair_the_consumers_moved_past_is_resent(probe_queue: str) -> None:
    lost, later = open_counters(2)
    _probe_ids(probe_queue)
    quiet = settings.LEDGER_QUEUED_SECONDS
    _queued(lost.event_id, sent_ago=quiet + 5)
    _started(later.event_id, sent_ago=quiet + 4, moved_ago=1)  # still moving, past it

    assert _probe_resent() == [lost.event_id]
    assert _probe_ids(probe_queue) == [str(lost.event_id)]


def test_a_queued_pair_behind_a_moving_backlog_waits_without_a_copy(probe_queue: str) -> None:
    earlier, waiting = open_counters(2)
    _probe_ids(probe_queue)
    quiet = settings.LEDGER_QUEUED_SECONDS
    _started(earlier.event_id, sent_ago=quiet + 6, moved_ago=1)  # the consumers are busy
    _queued(waiting.event_id, sent_ago=quiet + 5)

    assert _probe_resent() == []
    assert _probe_ids(probe_queue) == []
    row = Delivery.objects.get(handler=PROBE, event_id=waiting.event_id)
    assert (row.status, row.resends, row.last_resent_at) == (Status.QUEUED, 0, None)
    again = (row.reconcile_at - timezone.now()).total_seconds()
    assert again == pytest.approx(quiet, abs=2)

    # Behind a queue that keeps moving without passing it, it waits only so long.
    _queued(waiting.event_id, sent_ago=quiet * ledger.MAX_QUEUED_WAITS + 1)
    assert _probe_resent() == [waiting.event_id]
    _probe_ids(probe_queue)
    Delivery.objects.filter(handler=PROBE, event_id=waiting.event_id).update(
        resends=0, last_resent_at=None
    )

    # The consumers stop (a broker that lost its messages): the pair is re-sent.
    _started(earlier.event_id, sent_ago=quiet + 6, moved_ago=quiet + 1)
    _queued(waiting.event_id, sent_ago=quiet + 5)
    assert _probe_resent() == [waiting.event_id]
    assert _probe_ids(probe_queue) == [str(waiting.event_id)]


def test_a_resent_pair_is_placed_by_its_last_send_not_its_first(probe_queue: str) -> None:
    resent, later = open_counters(2)
    _probe_ids(probe_queue)
    quiet = settings.LEDGER_QUEUED_SECONDS
    _queued(resent.event_id, sent_ago=3 * quiet)
    Delivery.objects.filter(handler=PROBE, event_id=resent.event_id).update(
        resends=1, last_resent_at=timezone.now() - timedelta(seconds=quiet + 2)
    )
    # sent after the first send, before the re-send, and consumed a moment ago
    _started(later.event_id, sent_ago=2 * quiet, moved_ago=1)

    assert _probe_resent() == []  # the copy is still behind the backlog
    Delivery.objects.filter(handler=PROBE, event_id=later.event_id).update(
        created_at=timezone.now() - timedelta(seconds=quiet)
    )  # a pair sent after the copy has started: the copy was lost too
    _queued(resent.event_id, sent_ago=3 * quiet)
    assert _probe_resent() == [resent.event_id]


def test_two_reconcilers_at_once_resend_each_pair_once(probe_queue: str) -> None:
    opened = open_counters(40)
    _probe_ids(probe_queue)
    Delivery.objects.filter(handler=PROBE).update(
        reconcile_at=timezone.now() - timedelta(seconds=1)
    )
    start = threading.Barrier(2)

    def reconcile() -> list[ledger.Resent]:
        start.wait()
        return ledger.reconcile(limit=1000)

    futures = run_in_threads(reconcile, [(), ()])

    resent = [r.event_id for f in futures for r in f.result() if r.handler == PROBE]
    assert sorted(map(str, resent)) == sorted(str(e.event_id) for e in opened)
    assert sorted(_probe_ids(probe_queue)) == sorted(str(e.event_id) for e in opened)


def test_a_running_pair_is_due_a_margin_after_its_handlers_hard_time_limit() -> None:
    now = timezone.now()
    margin = settings.LEDGER_MARGIN_SECONDS
    own_limit = ledger.running_deadline(subscription("test.overridden"), now)
    default = ledger.running_deadline(subscription("test.scripted"), now)

    assert own_limit == now + timedelta(seconds=10 + margin)
    assert default == now + timedelta(seconds=settings.RESILIENCE_HANDLER_TIME_LIMIT + margin)


def test_a_message_the_broker_lost_is_sent_again_and_takes_effect_once(
    job: Job, settings, celery_worker
) -> None:
    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    recorded = request_job("lost")
    # The broker took the message and lost it: the row is published, nothing was queued.
    OutboxMessage.objects.filter(event__event_id=recorded.event_id).update(
        published_at=timezone.now()
    )
    ledger.expect([(sub.name, recorded.event_id) for sub in subscribers(recorded.type)])
    assert wait_for_status("test.scripted", recorded, Status.QUEUED).starts == 0

    _make_due("test.scripted", recorded.event_id)
    ledger.reconcile()

    found = wait_for_status("test.scripted", recorded, Status.SUCCEEDED)
    assert found.resends == 1
    assert effects("test.scripted", "lost") == 1
    # The worker's log lines of that delivery name its handler, event and correlation id.
    tag = (
        f"[handler=test.scripted event={recorded.event_id}"
        f" correlation={recorded.metadata.correlation_id}]"
    )
    wait_until(lambda: tag in celery_worker.output(), message="a tagged log line")


def test_a_wait_longer_than_the_broker_may_hold_is_kept_in_the_ledger(job: Job) -> None:
    script("two-hours", "slow-down")
    recorded = job("two-hours")

    found = wait_for_status("test.scripted", recorded, Status.RETRYING)

    [attempt] = Attempt.objects.filter(delivery=found)
    assert attempt.countdown > settings.LEDGER_MAX_BROKER_COUNTDOWN
    assert found.reconcile_at == found.next_attempt_at  # sent by the reconciler, when due
    unacked = redis.Redis.from_url(settings.CELERY_BROKER_URL).hvals("unacked")
    held = [m for m in unacked if str(recorded.event_id).encode() in m and b"test.scripted" in m]
    assert not held  # no countdown message sits in the broker
    # When the time comes, the reconciler sends it.
    _make_due("test.scripted", recorded.event_id)
    ledger.reconcile()
    wait_for_status("test.scripted", recorded, Status.SUCCEEDED)
    assert effects("test.scripted", "two-hours") == 1


def test_a_handler_past_its_hard_time_limit_is_retried_as_a_timeout_then_dead_lettered(
    job: Job,
) -> None:
    script("stubborn:hard", "stubborn", "stubborn", "stubborn")
    recorded = job("hard")

    found = wait_for_status("test.stubborn", recorded, Status.DEAD_LETTERED, timeout=60)

    log = Attempt.objects.filter(delivery=found)
    assert [(a.kind, a.outcome) for a in log] == [("timeout", "retry")] * 2 + [
        ("timeout", "dead_letter")
    ]
    assert found.starts == found.finishes == 3  # each kill ended a run; none was a "loss"
    letter = dead_letter("test.stubborn", recorded)
    assert (letter.kind, letter.event_type) == ("timeout", "test.job.requested")
    assert "hard time limit" in letter.message
    assert not DeadLetter.objects.filter(handler__startswith="(").exists()  # no poison letter

    dead_letters.retry(letter.pk, actor=None)  # the script is spent: it runs normally now

    wait_for_status("test.stubborn", recorded, Status.SUCCEEDED, timeout=30)
    wait_until(lambda: dead_letter("test.stubborn", recorded).status == "resolved")
    assert effects("test.stubborn", "hard") == 1


def test_a_dead_letter_retry_survives_a_broker_error(job: Job, caplog) -> None:
    script("replay-me", "validation")
    recorded = job("replay-me")
    wait_for_status("test.scripted", recorded, Status.DEAD_LETTERED)
    letter = dead_letter("test.scripted", recorded)
    with celery_broker(f"redis://127.0.0.1:{free_port()}/0", pytest.MonkeyPatch()):
        dead_letters.retry(letter.pk, actor=None)  # its nudge finds no broker

    assert "the reconciler will" in caplog.text
    queued = Delivery.objects.get(handler="test.scripted", event_id=recorded.event_id)
    assert (queued.status, queued.replay_of_id) == (Status.QUEUED, letter.pk)
    assert DeadLetter.objects.get(pk=letter.pk).status == "retrying"

    _make_due("test.scripted", recorded.event_id)
    ledger.reconcile()

    wait_for_status("test.scripted", recorded, Status.SUCCEEDED)
    wait_until(lambda: DeadLetter.objects.get(pk=letter.pk).status == "resolved")
    assert effects("test.scripted", "replay-me") == 1


def test_an_event_of_a_newer_schema_version_is_deferred_without_spending_attempts(
    job: Job,
) -> None:
    # Written by a newer release during a rolling deploy.
    row = store_raw_event(data={"name": "from-the-future"}, schema_version=2)
    relay.publish_pending(ids=[OutboxMessage.objects.create(event=row).pk])

    def deferred_twice() -> bool:
        return (
            Attempt.objects.filter(
                delivery__handler="test.scripted", delivery__event_id=row.event_id
            ).count()
            >= 2
        )

    wait_until(deferred_twice, message="two deferrals")
    found = Delivery.objects.get(handler="test.scripted", event_id=row.event_id)
    assert found.status in (Status.DEFERRED, Status.RUNNING)
    assert found.attempts == 0
    log = Attempt.objects.filter(delivery=found)
    assert {(a.kind, a.outcome) for a in log} == {("unavailable", "defer")}
    assert not DeadLetter.objects.filter(event_id=row.event_id).exists()
    # Stop deferring it for ever in this test run.
    Delivery.objects.filter(pk=found.pk).update(status=Status.SUCCEEDED, reconcile_at=None)
    current_app.control.revoke(relay.delivery_task_id("test.scripted", row.event_id))


def test_the_ledger_summary_counts_what_is_not_at_an_end() -> None:
    now = timezone.now()
    for index, status in enumerate(
        [Status.QUEUED, Status.QUEUED, Status.RUNNING, Status.SUCCEEDED]
    ):
        Delivery.objects.create(
            handler="test.summary",
            event_id=uuid.uuid4(),
            status=status,
            reconcile_at=now - timedelta(seconds=1) if index == 0 else None,
            last_resent_at=now if index == 1 else None,
        )

    summary = ledger.summary()

    assert {k: v["count"] for k, v in summary["not_terminal"].items()} == {
        "queued": 2,
        "running": 1,
    }
    assert summary["overdue"] == 1
    assert summary["resent_last_hour"] == 1


def test_a_stream_lock_makes_park_and_release_atomic(settings) -> None:
    """A park that checks while a release is committing waits for it, then sees the letter
    closed: without the lock it would park behind a letter that is already resolved."""
    from apps.resilience.services import parking

    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    stream = uuid.uuid4()
    first = request_job("parked-1", stream_id=stream)
    second = request_job("parked-2", stream_id=stream, version=1)
    letter = make_letter("test.ordered", first)
    started = Delivery.objects.create(
        handler="test.ordered", event_id=second.event_id, status=Status.RUNNING, starts=1
    )
    releasing, parked = threading.Event(), []

    def release() -> None:
        with transaction.atomic():
            DeadLetter.objects.filter(pk=letter.pk).update(status="resolved")
            parking.release_next("test.ordered", stream)  # takes the stream lock
            releasing.set()
            wait_until(lambda: someone_waits("advisory"), message="the park to wait for the lock")

    def park() -> None:
        releasing.wait(10)
        parked.append(parking.park_if_blocked("test.ordered", second, started.pk))

    run_in_threads(lambda fn: fn(), [(release,), (park,)])

    assert parked == [False]
    assert Delivery.objects.get(pk=started.pk).status == Status.RUNNING


def test_the_sweep_releases_what_waits_behind_a_closed_letter(probe_queue: str, settings) -> None:
    from apps.resilience.models import ParkedMessage
    from apps.resilience.services import parking

    settings.OUTBOX_PUBLISH_ON_COMMIT = False
    stream = uuid.uuid4()
    first = request_job("frozen-1", stream_id=stream)
    second = request_job("frozen-2", stream_id=stream, version=1)
    letter = make_letter(PROBE, first, status="resolved")  # closed; its release was lost
    ParkedMessage.objects.create(
        handler=PROBE,
        event_id=second.event_id,
        stream_id=stream,
        version=2,
        blocked_by=letter,
        reason="blocked",
    )

    assert parking.sweep() == 1

    assert ParkedMessage.objects.get(event_id=second.event_id).status == "released"
    queued = Delivery.objects.get(handler=PROBE, event_id=second.event_id)
    assert queued.status == Status.QUEUED
    assert queued.reconcile_at is not None
    assert _probe_ids(probe_queue) == [str(second.event_id)]
    assert parking.sweep() == 0
