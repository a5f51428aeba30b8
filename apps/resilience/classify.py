"""``classify``: the one place that maps an exception to an error kind.

Infrastructure exceptions (database, HTTP client, broker) are translated here and nowhere
else; the handler task base asks this module and the retry policy what to do.
"""

from __future__ import annotations

import json
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
import pydantic
import redis
from billiard.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import (
    ImproperlyConfigured,
    ObjectDoesNotExist,
    PermissionDenied,
    ValidationError,
)
from django.db import IntegrityError, InterfaceError, OperationalError
from django.utils import timezone

from apps.eventstore.exceptions import (
    ConcurrencyConflict,
    EventDecodeError,
    StreamNotFound,
    UnknownEventType,
)
from apps.resilience.taxonomy import BackstopError, ErrorKind, RateLimited, Severity, Unavailable


@dataclass(frozen=True)
class Classification:
    """What kind of failure an exception is, and what it says about when to try again."""

    kind: ErrorKind
    severity: Severity
    retry_after: float | None = None  # seconds, from a Retry-After
    retry_at: datetime | None = None  # when a known-down dependency may answer again


# Checked in order: the first matching class wins, so subclasses come before their bases.
_BY_TYPE: list[tuple[type[BaseException] | tuple[type[BaseException], ...], ErrorKind]] = [
    (ConcurrencyConflict, ErrorKind.TRANSIENT),
    (StreamNotFound, ErrorKind.NOT_FOUND),
    (
        (
            UnknownEventType,
            EventDecodeError,
            json.JSONDecodeError,
            UnicodeDecodeError,
            pydantic.ValidationError,
        ),
        ErrorKind.CORRUPTION,
    ),
    (SoftTimeLimitExceeded, ErrorKind.TIMEOUT),
    ((OperationalError, InterfaceError), ErrorKind.TRANSIENT),
    (IntegrityError, ErrorKind.BUSINESS_RULE),
    (ValidationError, ErrorKind.VALIDATION),
    (ObjectDoesNotExist, ErrorKind.NOT_FOUND),
    (PermissionDenied, ErrorKind.AUTHORIZATION),
    (ImproperlyConfigured, ErrorKind.CONFIGURATION),
    # The mail server refused the message itself: sending it again won't help.
    (
        (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPNotSupportedError),
        ErrorKind.VALIDATION,
    ),
    (smtplib.SMTPException, ErrorKind.TRANSIENT),
    ((httpx.TimeoutException, redis.TimeoutError, TimeoutError), ErrorKind.TIMEOUT),
    ((httpx.TransportError, redis.ConnectionError, ConnectionError), ErrorKind.TRANSIENT),
    # Plain bases last: their subclasses above (decode errors, pydantic's ValidationError,
    # connection and timeout errors) keep their own kinds. A handler's ValueError is a
    # rule its input broke; a PermissionError, access it was refused.
    (ValueError, ErrorKind.BUSINESS_RULE),
    (PermissionError, ErrorKind.AUTHORIZATION),
]


def classify(exc: BaseException) -> Classification:
    """Return the classification of ``exc``; anything unknown is a ``system`` error."""
    if isinstance(exc, httpx.HTTPStatusError):
        return _classify_status(exc.response)
    kind = exc.kind if isinstance(exc, BackstopError) else _kind_by_type(exc)
    return Classification(
        kind=kind,
        severity=default_severity(kind),
        retry_after=exc.retry_after if isinstance(exc, RateLimited) else None,
        retry_at=exc.retry_at if isinstance(exc, Unavailable) else None,
    )


def _kind_by_type(exc: BaseException) -> ErrorKind:
    for types, kind in _BY_TYPE:
        if isinstance(exc, types):
            return kind
    return ErrorKind.SYSTEM


def _classify_status(response: httpx.Response) -> Classification:
    status = response.status_code
    if status == 429:
        kind = ErrorKind.RATE_LIMITED
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return Classification(kind, default_severity(kind), retry_after=retry_after)
    kind = ErrorKind.TRANSIENT if status >= 500 else ErrorKind.VALIDATION
    return Classification(kind, default_severity(kind))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return a Retry-After header (delta-seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta: timedelta = when - (now or timezone.now())
    return max(0.0, delta.total_seconds())


def default_severity(kind: ErrorKind) -> Severity:
    """Return the severity a dead letter of ``kind`` gets (``RESILIENCE_SEVERITY``)."""
    return Severity(settings.RESILIENCE_SEVERITY[kind.value])
