"""JSON log lines for a log collector: one object a line, with the delivery's context.

``apps.resilience.log_context.DeliveryContextFilter`` (on the console handler) puts the
``handler``, ``event_id`` and ``correlation_id`` of the delivery running on every record;
this formatter writes them as fields, leaving out the "-" of lines outside a delivery.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from apps.resilience.log_context import FIELDS


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, process, logger, message, the
    delivery's context when there is one, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "process": record.processName,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, "-")
            if value != "-":
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)
