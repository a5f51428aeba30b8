"""A Celery consumer that turns messages it can't even read into dead letters, and that
finds its broker again soon after an outage.

Celery logs and drops a message whose body can't be decoded or that names no known task.
Backstop keeps it: a dead letter of kind ``corruption`` with the raw body, then the
message is acknowledged as before so it can't block the queue.

Celery reconnects to a lost broker after 2 s, then 4, 6, ... up to 30 s between tries (kombu's
defaults; no setting changes them): a worker finds a broker that is back only at its next
try, up to 16 s later a minute into an outage, 30 s later after four minutes. Backstop's
consumer tries after 1 s, then 1 s longer each time up to ``BROKER_RECONNECT_MAX_SECONDS``,
for as long as Celery would have kept trying, and leaves the rest of Celery's reconnection
(its retry switches, fail-over) as it is.

Celery closes a lost connection ignoring only connection errors; kombu's Redis channel can
raise ``AttributeError`` from that close (it restores unacknowledged messages through a
transport that has already let go of its connection, seen when Redis restarts). Celery takes
it for an unrecoverable error and stops the worker. Backstop's consumer logs it and
reconnects: what was unacknowledged comes back after the broker's visibility timeout, and
the delivery ledger re-sends what never finished. The same goes for a message of the lost
connection acknowledged after the worker has reconnected (``tolerant_ack``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery.worker.consumer import Consumer
from celery.worker.state import maybe_shutdown
from django.conf import settings
from kombu import Connection
from kombu.message import Message

from apps.resilience.classify import classify
from apps.resilience.services import dead_letters
from apps.resilience.services.escalation import escalate
from apps.resilience.taxonomy import Corruption

if TYPE_CHECKING:
    from celery.app.task import Context

logger = logging.getLogger(__name__)


def keep_poison(
    reason: str, message: Message | Context, body: Any, exc: BaseException | None
) -> None:
    """Write a corruption dead letter for a message the worker can't process at all.

    ``message`` is the kombu message, or the request of a task that failed before the
    runtime took it; only its ``body`` and ``headers`` are read, where it has them.
    """
    error = Corruption(f"{reason}: {exc}" if exc else reason)
    raw = body if isinstance(body, str) else _text(getattr(message, "body", b""))
    try:
        letter = dead_letters.record(
            handler=f"({reason})",
            exc=error,
            classification=classify(error),
            attempts=1,
            raw_payload={
                "body": raw[:100_000],
                "headers": _jsonable(getattr(message, "headers", None)),
            },
        )
        escalate(letter)
    except Exception:  # the consumer must keep consuming even when the database is away
        logger.exception("could not dead-letter a poison message")


def _text(body: Any) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return repr(body)


def _jsonable(headers: Any) -> dict[str, str]:
    return {str(k): repr(v)[:500] for k, v in (headers or {}).items()}


def connect_soon(conn: Connection, max_retries: int | None) -> Connection:
    """Connect ``conn``, trying again 1 s after a failure, then 1 s longer each time up to
    ``BROKER_RECONNECT_MAX_SECONDS``. The worker gives up (raises, and stops) after as long
    as Celery's own back-off takes for ``max_retries`` tries (``patience``): tries come
    sooner, not fewer. ``None``: for ever; 0: one try."""
    budget = patience(max_retries)
    tries = 0

    def failed(exc: Exception, interval: float) -> None:
        nonlocal tries
        if interval == 0 and getattr(conn, "alt", None):
            then = "Will retry using next failover."
        else:
            tries += 1
            then = f"Trying again in {interval:.0f} s (try {tries})"
        logger.error("consumer: Cannot connect to %s: %s. %s", conn.as_uri(), exc, then)

    conn.ensure_connection(
        failed,
        None if budget else max_retries,  # type: ignore[arg-type]  # kombu: None is for ever
        interval_start=1,
        interval_step=1,
        interval_max=settings.BROKER_RECONNECT_MAX_SECONDS,
        callback=maybe_shutdown,  # a worker asked to stop while it waits stops
        timeout=budget,  # type: ignore[arg-type]  # kombu: None is no limit
    )
    return conn


def patience(max_retries: int | None) -> float | None:
    """Return how long Celery's own back-off (2 s, then 2 s longer each time, at most 30 s)
    keeps trying for ``max_retries`` tries: 2,790 s for its default 100."""
    if max_retries is None:
        return None
    return float(sum(min(2 * (n + 1), 30) for n in range(max_retries)))


def tolerant_close(close: Callable[[], None]) -> Callable[[], None]:
    """Return ``close`` that logs kombu's ``AttributeError`` instead of raising it (see the
    module); connection errors still reach Celery, which ignores them itself."""

    def closing() -> None:
        try:
            close()
        except AttributeError:
            logger.warning(
                "consumer: kombu failed closing the lost broker connection; reconnecting",
                exc_info=True,
            )

    return closing


def tolerant_ack(settle: Callable[..., None]) -> Callable[..., None]:
    """Return ``settle`` (a message's ``ack_log_error`` or ``reject_log_error``) logging
    kombu's ``AttributeError`` for a message of a lost connection instead of raising it.

    A task still running when its connection was lost is settled later, from the event
    loop, through the old channel, whose transport has let go of its connection: kombu's
    Redis channel raises ``AttributeError`` there, which Celery takes for an unrecoverable
    error, and the worker stops (seen after a Redis restart, just after reconnecting). The
    broker gives such a message back after its visibility timeout, and the delivery ledger
    re-sends what never finished. Any other ``AttributeError`` is raised as before.
    """

    @functools.wraps(settle)
    def settling(*args: Any, **kwargs: Any) -> None:
        try:
            settle(*args, **kwargs)
        except AttributeError:
            if not _of_a_lost_connection(settle):
                raise
            logger.warning(
                "consumer: could not settle a message of the lost broker connection; the "
                "broker gives it back after its visibility timeout",
                exc_info=True,
            )

    # Still the message's ack or reject to Celery: a warm shutdown runs those (and only
    # those) while the pool is joined, finding them by their message and name.
    if hasattr(settle, "__self__"):
        setattr(settling, "__self__", settle.__self__)  # noqa: B010 - a function's attribute
    return settling


def _of_a_lost_connection(settle: Callable[..., None]) -> bool:
    """Return whether ``settle`` is bound to a message whose transport has no connection."""
    channel = getattr(getattr(settle, "__self__", None), "channel", None)
    transport = getattr(channel, "connection", None)
    return transport is not None and getattr(transport, "client", True) is None


class DeadLetteringConsumer(Consumer):
    def ensure_connected(self, conn: Connection) -> Connection:
        conf = self.app.conf
        retry = conf.broker_connection_retry
        if self.first_connection_attempt and conf.broker_connection_retry_on_startup is not None:
            retry = conf.broker_connection_retry_on_startup
        if retry:  # Celery's rule for whether to retry at all; with retries off, it connects once
            connect_soon(conn, conf.broker_connection_max_retries)
        return super().ensure_connected(conn)  # connected: Celery's bookkeeping only

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        if self.connection is not None:  # see the module: a close that can't stop the worker
            self.connection.close = tolerant_close(self.connection.close)  # type: ignore[method-assign]
        super().on_connection_error_after_connected(exc)

    def call_soon_ack(self, p: Callable[..., None], *args: Any, **kwargs: Any) -> Any:
        # Celery 5.7's (not in its type stubs); see tolerant_ack.
        return super().call_soon_ack(tolerant_ack(p), *args, **kwargs)  # type: ignore[misc]

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        keep_poison("undecodable message", message, None, exc)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        keep_poison("unknown message format", message, body, None)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        keep_poison("unknown task", message, body, exc)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        keep_poison("invalid task", message, body, exc)
        super().on_invalid_task(body, message, exc)
