"""The outbox relay: moves committed outbox rows to the broker.

Each row is published once by one relay (rows are claimed with ``SKIP LOCKED``), and at
least once overall: a relay that dies after sending and before marking the row leaves it
to be sent again. Deliveries are idempotent (stable task ids, processed marks), so a
second copy has no second effect.

Two paths reach the same function. Right after a commit, ``publish_after_commit`` publishes
the rows that transaction wrote (low latency). A beat-scheduled sweep publishes whatever
that missed: a crash between commit and publish, or a broker that was down.
"""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery, current_app
from django.conf import settings
from django.db import connection as db
from django.db import transaction
from django.utils import timezone
from kombu import Connection, Producer
from kombu.exceptions import KombuError

from apps.eventstore import following
from apps.eventstore.models import OutboxMessage
from apps.eventstore.subscriptions import PublishOptions, subscribers, subscription

DELIVER_TASK = "backstop.deliver"
PUBLISH_TASK = "backstop.outbox.publish"
# Task ids are derived from (handler, event) so a republished message is recognisable.
_TASK_ID_NAMESPACE = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
logger = logging.getLogger(__name__)


# Records the (handler, event id) pairs of published rows in the delivery ledger, inside
# the transaction that marks them published. The runtime that owns the ledger installs it
# at start-up (``apps.resilience``); the event store knows no more of it than this.
LedgerRecorder = Callable[[list[tuple[str, uuid.UUID]]], None]
_record_deliveries: LedgerRecorder | None = None


def record_deliveries_with(recorder: LedgerRecorder | None) -> None:
    """Install the function that records expected deliveries when rows are published."""
    global _record_deliveries
    _record_deliveries = recorder


def record_expected(pairs: list[tuple[str, uuid.UUID]]) -> None:
    """Record ``queued`` deliveries of (handler, event id) pairs in the ledger, in the
    caller's transaction (a no-op until the runtime installed its recorder)."""
    if _record_deliveries is not None and pairs:
        _record_deliveries(pairs)


def send_delivery(
    handler: str, event_id: uuid.UUID | str, *, countdown: float | None = None
) -> None:
    """Send one ``deliver(handler, event_id)`` message to the handler's queue, outside the
    relay (the ledger's re-sends, a replayed dead letter, a released parked event)."""
    options: PublishOptions
    try:
        sub = subscription(handler)
    except KeyError:  # an unknown handler is dead-lettered by the runtime, not lost here
        queue, options = "handlers", {}
    else:
        queue, options = sub.queue, sub.publish_options()
    for _ in range(settings.EVENTSTORE_PUBLISH_COPIES):
        current_app.send_task(
            DELIVER_TASK,
            args=(handler, str(event_id)),
            task_id=delivery_task_id(handler, event_id),
            queue=queue,
            countdown=countdown,
            # celery-types declares the time limits int; Celery takes float seconds.
            **options,  # type: ignore[arg-type]
        )


def delivery_task_id(handler: str, event_id: uuid.UUID | str) -> str:
    """Return the stable Celery task id of the message for ``handler`` and ``event_id``."""
    return str(uuid.uuid5(_TASK_ID_NAMESPACE, f"{handler}:{event_id}"))


@dataclass(frozen=True)
class _Claimed:
    """An outbox row claimed for publishing, with what its messages need of its event."""

    id: int
    attempts: int
    event_id: uuid.UUID
    type: str


def publish_pending(
    *,
    ids: Iterable[int] | None = None,
    older_than: timedelta | None = None,
    limit: int | None = None,
    connection: Connection | None = None,
) -> int:
    """Publish unpublished outbox rows and return how many were published.

    1. In one transaction, claim up to ``limit`` unpublished rows (only ``ids``, or only
       rows older than ``older_than``, when given) with ``FOR UPDATE SKIP LOCKED``: a row
       another relay holds is skipped, never published twice.
    2. Send one ``deliver(handler, event_id)`` message per subscribed handler, and one
       nudge to the follower of each projection the rows' events concern.
    3. Mark the sent rows published and, in the same transaction, record one expected
       delivery per (handler, event) in the ledger; on a broker error, record it on the
       row, stop, and leave that row and the rest for the next sweep.

    Runs after every command's commit, so both statements are plain SQL (no ORM compile).
    """
    where: list[str] = ["o.published_at IS NULL"]
    params: list[Any] = []
    if ids is not None:
        ids = list(ids)
        if not ids:
            return 0
        where.append(f"o.id IN ({', '.join(['%s'] * len(ids))})")
        params.extend(ids)
    if older_than is not None:
        where.append("o.created_at <= %s")
        params.append(db.ops.adapt_datetimefield_value(timezone.now() - older_than))
    params.append(limit or settings.OUTBOX_BATCH_SIZE)
    lock = " FOR UPDATE OF o SKIP LOCKED" if db.vendor == "postgresql" else ""
    with transaction.atomic():
        with db.cursor() as cursor:
            cursor.execute(
                "SELECT o.id, o.attempts, e.event_id, e.type"
                " FROM eventstore_outboxmessage o"
                " JOIN eventstore_event e ON e.position = o.event_id"
                f" WHERE {' AND '.join(where)} ORDER BY o.id LIMIT %s{lock}",
                params,
            )
            rows = [
                _Claimed(pk, attempts, uuid.UUID(str(event_id)), type_)
                for pk, attempts, event_id, type_ in cursor.fetchall()
            ]
        if not rows:
            return 0
        sent = _send(rows, connection)
        if sent:
            _crash_window()
            now = db.ops.adapt_datetimefield_value(timezone.now())
            with db.cursor() as cursor:
                cursor.execute(
                    "UPDATE eventstore_outboxmessage"
                    " SET published_at = %s, attempts = attempts + 1, last_attempt_at = %s"
                    f" WHERE id IN ({', '.join(['%s'] * sent)})",
                    [now, now, *(row.id for row in rows[:sent])],
                )
            record_expected(
                [
                    (sub.name, row.event_id)
                    for row in rows[:sent]
                    for sub in subscribers(row.type)
                    if not sub.projection
                ]
            )
    return sent


def _send(rows: list[_Claimed], connection: Connection | None) -> int:
    """Publish rows in order; return how many went out before the broker failed."""
    app = current_app
    subscribed = [sub for row in rows for sub in subscribers(row.type)]
    if connection is None and all(sub.projection for sub in subscribed):
        # Only followed projections subscribe (a todo's events): nothing to publish but
        # nudges, whose message, when one is sent at all, takes a producer of its own. Most
        # commands' relays then take none from the pool (a tenth of a POST's CPU). Such rows
        # are marked published while the broker is down too: the follower reads the log
        # from its checkpoint, and a failed nudge is logged and repeated by the outbox
        # sweep (``nudge_lagging``); the outbox backlog then doesn't show the outage, the
        # health check's broker probe does.
        _nudge({sub.projection for sub in subscribed if sub.projection}, None)
        return len(rows)
    sent, followed = 0, set()
    try:
        with app.producer_or_acquire() if connection is None else connection.Producer() as producer:
            for row in rows:
                try:
                    followed |= _publish(app, producer, row)
                except (KombuError, OSError) as exc:
                    _record_failure(row, exc)
                    break
                sent += 1
            _nudge(followed, producer)
    except (KombuError, OSError) as exc:
        _record_failure(rows[0], exc)
        return 0
    return sent


def _nudge(names: set[str], producer: Producer | None) -> None:
    """Nudge the followers of projections; a nudge that fails is the outbox sweep's to
    repeat (it nudges every projection behind the log), not a reason to publish again."""
    for name in sorted(names):
        try:
            following.nudge(name, producer=producer)
        except Exception:
            logger.warning("nudge of projection %s failed; the sweep will nudge it", name)


def _publish(app: Celery, producer: Producer, row: _Claimed) -> set[str]:
    """Send the row's messages: one per subscriber (more only under fault injection); return
    the projections whose followers must be nudged instead."""
    followed = set()
    for sub in subscribers(row.type):
        if sub.projection:
            followed.add(sub.projection)
            continue
        for _ in range(settings.EVENTSTORE_PUBLISH_COPIES):
            app.send_task(
                DELIVER_TASK,
                args=(sub.name, str(row.event_id)),
                task_id=delivery_task_id(sub.name, row.event_id),
                queue=sub.queue,
                producer=producer,
                # celery-types declares the time limits int; Celery takes float seconds.
                **sub.publish_options(),  # type: ignore[arg-type]
                retry=True,
                retry_policy=settings.CELERY_TASK_PUBLISH_RETRY_POLICY,
            )
    return followed


def _crash_window() -> None:
    """Under fault injection (``EVENTSTORE_RELAY_CRASH_RATE``), exit the process at once,
    between sending and marking the rows published: the window the sweep must cover."""
    rate = settings.EVENTSTORE_RELAY_CRASH_RATE
    if rate and random.random() < rate:  # a fault's dice, not a secret
        logger.warning("fault injection: the relay exits between sending and marking published")
        logging.shutdown()
        os._exit(70)


def _record_failure(row: _Claimed, exc: BaseException) -> None:
    logger.warning("outbox #%s not published, the sweep will retry: %s", row.id, exc)
    OutboxMessage.objects.filter(pk=row.id).update(
        attempts=row.attempts + 1,
        last_error=f"{type(exc).__name__}: {exc}"[:2000],
        last_attempt_at=timezone.now(),
    )


def publish_after_commit(ids: list[int]) -> None:
    """Publish the rows a transaction just committed; never raise into the caller.

    A few rows are published right here; a large batch (a bulk command) is handed to a
    worker in one message, so the request that wrote it doesn't wait for the broker.
    """
    size = settings.OUTBOX_BATCH_SIZE
    try:
        if len(ids) > settings.OUTBOX_INLINE_MAX:
            for start in range(0, len(ids), size):
                current_app.send_task(PUBLISH_TASK, args=(ids[start : start + size],))
            return
        publish_pending(ids=ids)
    except Exception:
        # The rows stay unpublished and the beat sweep picks them up; the command succeeded.
        logger.exception("on-commit relay failed for outbox rows %s", ids[:10])


def sweep() -> int:
    """Publish every row left behind, batch by batch; return how many were published."""
    grace = timedelta(seconds=settings.OUTBOX_SWEEP_GRACE_SECONDS)
    total = 0
    while True:
        published = publish_pending(older_than=grace)
        total += published
        if published < settings.OUTBOX_BATCH_SIZE:
            return total
