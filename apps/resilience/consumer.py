"""A Celery consumer that turns messages it can't even read into dead letters.

Celery logs and drops a message whose body can't be decoded or that names no known task.
Backstop keeps it: a dead letter of kind ``corruption`` with the raw body, then the
message is acknowledged as before so it can't block the queue.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery.worker.consumer import Consumer
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


class DeadLetteringConsumer(Consumer):
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
