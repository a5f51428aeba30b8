"""What a log line is about: the handler, event and correlation id of the delivery running.

The runtime sets them for the length of a delivery; ``DeliveryContextFilter`` (installed
on the console handler by the settings) puts them on every record, so any line a handler
or the runtime writes can be traced back to its event and the request that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current: ContextVar[dict[str, str] | None] = ContextVar("backstop_delivery", default=None)
FIELDS = ("handler", "event_id", "correlation_id")


@contextmanager
def delivery(handler: str, event_id: object) -> Iterator[None]:
    """Tag log lines written inside the block with ``handler`` and ``event_id``."""
    token = _current.set({"handler": handler, "event_id": str(event_id), "correlation_id": "-"})
    try:
        yield
    finally:
        _current.reset(token)


def set_correlation(correlation_id: object) -> None:
    """Add the running delivery's correlation id once its event has been read."""
    current = _current.get()
    if current is not None:
        current["correlation_id"] = str(correlation_id)


class DeliveryContextFilter(logging.Filter):
    """Add ``handler``, ``event_id`` and ``correlation_id`` to each record ("-" outside a
    delivery), and ``delivery``: the three as a suffix for plain formats ("" outside)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _current.get()
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, current.get(name, "-") if current else "-")
        record.delivery = (
            # LogRecord declares no such attributes: the loop above set them.
            f" [handler={record.handler} event={record.event_id}"  # type: ignore[attr-defined]
            f" correlation={record.correlation_id}]"
            if current
            else ""
        )
        return True
