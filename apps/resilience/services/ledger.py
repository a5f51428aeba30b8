"""The delivery ledger: the database, not the broker, knows what is left to deliver.

Why a ledger: a Redis broker loses a message when a worker dies between taking it off the
list and recording it as unacknowledged, holds a dead worker's reserved messages for the
whole visibility timeout, forgets everything when restarted without persistence, and
Celery acknowledges a task its hard time limit killed. So every (handler, event) pair the
relay publishes gets a ``Delivery`` row in the transaction that marks the outbox row
published (``expect``), and the runtime moves that row to an end or to a wait.

The ledger is the ``Delivery`` table itself, with a ``queued`` state and a
``reconcile_at`` time, rather than a table of its own: the runtime already keeps one row
per pair (its start and finish counts, attempts, last error), and one row means one
write per step instead of two that could disagree.

``reconcile`` (run by beat) re-sends every pair whose ``reconcile_at`` has passed:

- ``queued`` and never started: ``LEDGER_QUEUED_SECONDS`` after it was sent, once its
  queue's consumers have moved past it or stopped (see below), then backing off
  (doubling);
- ``running``: past the handler's hard time limit plus ``LEDGER_MARGIN_SECONDS`` (the
  worker died; the next start counts the loss);
- ``retrying`` / ``deferred``: past ``next_attempt_at`` plus the margin when the retry
  went out as a broker countdown (the margin doubling with every re-send the pair already
  had, see ``wait_deadline``), or at ``next_attempt_at`` itself when the wait was longer
  than ``LEDGER_MAX_BROKER_COUNTDOWN`` and so was kept here only.

Late or lost? A queued pair past its time is either lost or still waiting behind a
backlog, and re-sending the waiting ones multiplies the backlog (each copy queues behind
it too, and is re-sent again when it is late in turn). So a due queued pair is re-sent
only when its queue's *frontier* shows it was lost: a pair sent to the same queue after
this one was last sent has started (the consumers moved past it), or the queue's newest
started pair has not moved for ``LEDGER_QUEUED_SECONDS`` (no consumer, or a broker that
lost its messages). While the queue is moving and has not reached the pair, the pair is
due again, without a re-send, when the queue will have been still that long, for at most
``MAX_QUEUED_WAITS`` times ``LEDGER_QUEUED_SECONDS`` after its send. The
frontier is the newest pair of the queue that has started, found by a backward scan of
the primary key over the backlog. A copy sent because a slow consumer held the message
longer than ``LEDGER_QUEUED_SECONDS`` while another consumer moved past is the cost of
this rule: one harmless extra run.

A copy of a message that was not lost is harmless: the processed mark makes its second
run a no-op. Pairs at an end (succeeded, dead-lettered, parked) have no ``reconcile_at``.

Handlers added later: the relay records pairs only for the handlers subscribed when it
publishes. ``manage.py catch_up_handler NAME`` records (and so delivers) the pairs of a
new handler for the events published before it existed; without it they are not sent.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min
from django.utils import timezone

from apps.eventstore import relay
from apps.eventstore.subscriptions import Subscription, all_subscriptions, subscription
from apps.resilience.models import Delivery

logger = logging.getLogger(__name__)
Status = Delivery.Status
# States a pair waits in; everything else is an end.
NOT_TERMINAL = (Status.QUEUED, Status.RUNNING, Status.RETRYING, Status.DEFERRED)
# The longest a queued pair's re-sends back off to.
MAX_QUEUED_BACKOFF_SECONDS = 3600.0
# A queued pair waiting behind a moving backlog is re-sent anyway once it has waited this
# many LEDGER_QUEUED_SECONDS: the queue's newest started pair may keep moving without the
# consumers ever passing it (a deferral repeating through an outage).
MAX_QUEUED_WAITS = 10


def expect(pairs: Iterable[tuple[str, uuid.UUID]]) -> None:
    """Record a ``queued`` delivery for each (handler, event id) pair not yet in the ledger.

    Called by the relay inside the transaction that marks the outbox rows published. A
    worker that already started the pair (its message arrived first) keeps its row.
    """
    now = timezone.now()
    due = now + timedelta(seconds=settings.LEDGER_QUEUED_SECONDS)
    rows = [
        Delivery(
            handler=handler,
            event_id=event_id,
            status=Status.QUEUED,
            reconcile_at=due,
            created_at=now,
            updated_at=now,
        )
        for handler, event_id in pairs
    ]
    if rows:
        Delivery.objects.bulk_create(rows, ignore_conflicts=True)


def running_deadline(sub: Subscription | None, now: datetime) -> datetime:
    """Return when a run started at ``now`` must have ended: the hard time limit plus margin."""
    limit: float = settings.RESILIENCE_HANDLER_TIME_LIMIT
    if sub is not None and sub.time_limit is not None:
        limit = sub.time_limit
    return now + timedelta(seconds=limit + settings.LEDGER_MARGIN_SECONDS)


def waits_in_broker(countdown: float) -> bool:
    """Return whether a retry this far off may be a broker countdown (else the ledger keeps it)."""
    return countdown <= settings.LEDGER_MAX_BROKER_COUNTDOWN


def wait_deadline(next_attempt_at: datetime, countdown: float, resends: int = 0) -> datetime:
    """Return when the reconciler sends a waiting pair: at its time if only the ledger holds
    it, else a margin later (the broker's countdown message should have come by then).

    The margin doubles with each re-send the pair has had. Behind a backlog longer than the
    margin the countdown message is late, not lost, and every copy the reconciler adds runs,
    waits again and re-publishes itself like the original: re-sent at a fixed margin, a
    pair waiting on another (an out-of-order event) gathered one more copy per margin for
    as long as the backlog lasted, and the copies lengthened the backlog."""
    if waits_in_broker(countdown):
        margin = settings.LEDGER_MARGIN_SECONDS * 2 ** min(resends, 16)
        return next_attempt_at + timedelta(seconds=min(margin, MAX_QUEUED_BACKOFF_SECONDS))
    return next_attempt_at


def requeue(handler: str, event_id: uuid.UUID, *, replay_of: int | None = None) -> None:
    """Put the pair back in the ledger as ``queued`` (in the caller's transaction) and send
    its message once that commits; if the send fails, the reconciler sends it later.

    Used by dead-letter retries (``replay_of`` names the letter) and parked releases, so
    neither depends on a message that a broker error could drop.
    """
    now = timezone.now()
    due = now + timedelta(seconds=settings.LEDGER_QUEUED_SECONDS)
    # A fresh start: earlier re-sends no longer lengthen its waits (``wait_deadline``).
    fields = {"status": Status.QUEUED, "reconcile_at": due, "next_attempt_at": None, "resends": 0}
    if replay_of is not None:
        fields["replay_of_id"] = replay_of
    Delivery.objects.update_or_create(handler=handler, event_id=event_id, defaults=fields)
    transaction.on_commit(lambda: _nudge(handler, event_id))


def _nudge(handler: str, event_id: uuid.UUID) -> None:
    try:
        relay.send_delivery(handler, event_id)
    except Exception:  # the ledger row is queued: the reconciler will send it
        logger.warning("could not send %s to %s now; the reconciler will", event_id, handler)


@dataclass(frozen=True)
class Resent:
    handler: str
    event_id: uuid.UUID
    status: str
    resends: int


@dataclass(frozen=True)
class Frontier:
    """The newest pair of a queue that has started: when it was sent, when it last moved."""

    sent_at: datetime
    moved_at: datetime


def reconcile(*, limit: int | None = None) -> list[Resent]:
    """Re-send the pairs that made no progress in time; return what was re-sent.

    1. In one transaction, claim up to ``limit`` pairs whose ``reconcile_at`` has passed
       with ``FOR UPDATE SKIP LOCKED`` (a second beat skips them). A queued pair its
       queue's consumers have not reached yet is only due again when the queue will have
       been still for ``LEDGER_QUEUED_SECONDS``; every other pair's ``reconcile_at`` moves
       forward (backing off for queued pairs) with ``resends + 1``.
    2. After commit, send one message per re-sent pair. A send that fails leaves the pair
       due again at its new ``reconcile_at``.
    """
    now = timezone.now()
    frontiers: dict[str, Frontier | None] = {}
    with transaction.atomic():
        due = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status__in=NOT_TERMINAL, reconcile_at__lte=now)
            .order_by("reconcile_at")
            .values_list(
                "pk", "handler", "event_id", "status", "resends", "updated_at", "last_resent_at"
            )[: limit or settings.LEDGER_RECONCILE_BATCH]
        )
        resent = []
        waiting: dict[datetime, list[int]] = {}
        for pk, handler, event_id, status, resends, queued_at, resent_at in due:
            if status == Status.QUEUED:
                sent_at = max(queued_at, resent_at or queued_at)
                check = _not_reached(handler, sent_at, now, frontiers)
                if check is not None:
                    waiting.setdefault(check, []).append(pk)
                    continue
            Delivery.objects.filter(pk=pk).update(
                reconcile_at=now + _backoff(handler, status, resends),
                resends=resends + 1,
                last_resent_at=now,
            )
            resent.append(Resent(handler, event_id, status, resends + 1))
        for check, pks in waiting.items():
            Delivery.objects.filter(pk__in=pks).update(reconcile_at=check)
    if waiting:
        behind = sum(map(len, waiting.values()))
        logger.info("%d queued pairs are behind a moving backlog, not re-sent", behind)
    for item in resent:
        logger.warning(
            "reconciler re-sent %s to %s (it was %s; re-send %d)",
            item.event_id,
            item.handler,
            item.status,
            item.resends,
        )
        _nudge(item.handler, item.event_id)
    return resent


def _not_reached(
    handler: str, sent_at: datetime, now: datetime, frontiers: dict[str, Frontier | None]
) -> datetime | None:
    """Return when to look again at a queued pair last sent at ``sent_at`` that its
    queue's consumers, still moving, have not reached yet (late, not lost); ``None`` if
    it was lost.

    That time is when the queue will have been still for ``LEDGER_QUEUED_SECONDS`` unless
    it moves again meanwhile: by then it has either moved past the pair or stopped."""
    try:
        queue = subscription(handler).queue
    except KeyError:  # a handler this process does not know: re-send as before
        return None
    if queue not in frontiers:
        frontiers[queue] = queue_frontier(queue)
    frontier = frontiers[queue]
    if frontier is None or frontier.sent_at > sent_at:
        return None  # nothing ever started there, or the consumers moved past the pair
    if now - sent_at >= timedelta(seconds=settings.LEDGER_QUEUED_SECONDS * MAX_QUEUED_WAITS):
        return None  # waited long enough: a copy costs less than waiting on
    check = frontier.moved_at + timedelta(seconds=settings.LEDGER_QUEUED_SECONDS)
    return check if check > now else None


def queue_frontier(queue: str) -> Frontier | None:
    """Return the newest pair of ``queue`` that has started (``None`` if none has).

    The scan runs backwards along the primary key and stops at the first started pair of
    the queue, so it reads the queued backlog and little else."""
    handlers = [s.name for s in all_subscriptions() if s.queue == queue]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT created_at, updated_at FROM {Delivery._meta.db_table}
            WHERE handler = ANY(%s) AND status <> 'queued'
            ORDER BY id DESC LIMIT 1
            """,
            [handlers],
        )
        row = cursor.fetchone()
    return Frontier(*row) if row else None


def _backoff(handler: str, status: str, resends: int) -> timedelta:
    """Return how long after a re-send the pair is due again if it still made no progress."""
    if status == Status.RUNNING:
        try:
            sub: Subscription | None = subscription(handler)
        except KeyError:
            sub = None
        now = timezone.now()
        return running_deadline(sub, now) - now
    seconds = settings.LEDGER_QUEUED_SECONDS * 2 ** min(resends + 1, 16)
    return timedelta(seconds=min(seconds, MAX_QUEUED_BACKOFF_SECONDS))


def summary(*, now: datetime | None = None) -> dict[str, object]:
    """Return the ledger at a glance: pairs not yet at an end by state (count, oldest), how
    many are overdue for the reconciler, and what it re-sent in the last hour."""
    now = now or timezone.now()
    open_rows = Delivery.objects.filter(status__in=NOT_TERMINAL)
    by_state = {
        row["status"]: {
            "count": row["n"],
            "oldest_seconds": (now - row["oldest"]).total_seconds() if row["oldest"] else None,
        }
        for row in open_rows.order_by()
        .values("status")
        .annotate(n=Count("pk"), oldest=Min("updated_at"))
    }
    hour_ago = now - timedelta(hours=1)
    return {
        "not_terminal": by_state,
        "overdue": open_rows.filter(reconcile_at__lte=now).count(),
        "resent_last_hour": Delivery.objects.filter(last_resent_at__gte=hour_ago).count(),
        "resent_last_hour_open": open_rows.filter(last_resent_at__gte=hour_ago).count(),
    }
