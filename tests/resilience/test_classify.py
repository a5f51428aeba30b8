"""classify(): every exception a handler can raise maps to one kind (pure logic)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pydantic
import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist, PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, InterfaceError, OperationalError

from apps.eventstore.exceptions import (
    ConcurrencyConflict,
    EventDecodeError,
    StreamNotFound,
    UnknownEventType,
)
from apps.resilience.classify import classify, parse_retry_after
from apps.resilience.taxonomy import (
    BusinessRuleViolation,
    ConfigurationError,
    Corruption,
    DependencyTimeout,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    SecurityViolation,
    SystemFault,
    TransientError,
    Unavailable,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _status_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://hooks.example.test/x")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


def _pydantic_error() -> pydantic.ValidationError:
    class Shape(pydantic.BaseModel):
        n: int

    try:
        Shape.model_validate({"n": "x"})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TransientError("x"), "transient"),
        (DependencyTimeout("x"), "timeout"),
        (RateLimited("x", retry_after=3), "rate_limited"),
        (Unavailable("x", retry_at=NOW), "unavailable"),
        (BusinessRuleViolation("x"), "business_rule"),
        (InvalidInput("x"), "validation"),
        (NotFound("x"), "not_found"),
        (Forbidden("x"), "authorization"),
        (SystemFault("x"), "system"),
        (ConfigurationError("x"), "configuration"),
        (Corruption("x"), "corruption"),
        (SecurityViolation("x"), "security"),
        (OperationalError("connection reset"), "transient"),
        (InterfaceError("closed"), "transient"),
        (IntegrityError("duplicate key"), "business_rule"),
        (DjangoValidationError("bad"), "validation"),
        (ObjectDoesNotExist(), "not_found"),
        (PermissionDenied(), "authorization"),
        (ImproperlyConfigured("missing"), "configuration"),
        (ConcurrencyConflict(uuid.uuid4(), 1, 2), "transient"),
        (StreamNotFound(uuid.uuid4()), "not_found"),
        (UnknownEventType("x.y"), "corruption"),
        (EventDecodeError("bad"), "corruption"),
        (json.JSONDecodeError("bad", "{", 0), "corruption"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), "corruption"),
        (_pydantic_error(), "corruption"),
        (SoftTimeLimitExceeded(), "timeout"),
        (httpx.ConnectTimeout("slow"), "timeout"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectError("refused"), "transient"),
        (httpx.RemoteProtocolError("reset"), "transient"),
        (ConnectionResetError(), "transient"),
        (_status_error(502), "transient"),
        (_status_error(503), "transient"),
        (_status_error(504), "transient"),
        (_status_error(500), "transient"),
        (_status_error(400), "validation"),
        (_status_error(404), "validation"),
        (_status_error(429), "rate_limited"),
        (ValueError("amount must be positive"), "business_rule"),
        (PermissionError(13, "Permission denied"), "authorization"),
        (KeyError("surprise"), "system"),
        (ZeroDivisionError(), "system"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_each_exception_maps_to_its_kind(exc: BaseException, kind: str) -> None:
    assert classify(exc).kind == kind


@pytest.mark.parametrize(
    ("kind_exc", "severity"),
    [
        (TransientError("x"), "high"),
        (InvalidInput("x"), "medium"),
        (BusinessRuleViolation("x"), "low"),
        (Corruption("x"), "critical"),
        (KeyError("x"), "critical"),
    ],
)
def test_severity_follows_the_kind(kind_exc: BaseException, severity: str) -> None:
    assert classify(kind_exc).severity == severity


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (json.JSONDecodeError("bad", "{", 0), "corruption"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), "corruption"),
        (_pydantic_error(), "corruption"),
        (ConnectionRefusedError(), "transient"),
        (TimeoutError(), "timeout"),
        (type("RuleBroken", (ValueError,), {})("x"), "business_rule"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_the_plain_bases_do_not_shadow_their_subclasses(exc: BaseException, kind: str) -> None:
    """ValueError and PermissionError are checked last: a more specific class still wins."""
    assert isinstance(exc, ValueError | OSError)
    assert classify(exc).kind == kind


def test_a_429_carries_retry_after_in_seconds() -> None:
    assert classify(_status_error(429, {"Retry-After": "7"})).retry_after == 7.0


def test_a_429_carries_retry_after_given_as_an_http_date() -> None:
    when = datetime.now(tz=UTC) + timedelta(seconds=30)
    retry_after = classify(
        _status_error(429, {"Retry-After": format_datetime(when, usegmt=True)})
    ).retry_after
    assert retry_after == pytest.approx(30, abs=1.5)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("Mon, 23 Nov 2026 12:00:30 GMT", 30.0),
        ("Mon, 23 Nov 2026 11:59:00 GMT", 0.0),  # in the past: go now
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_a_rate_limit_without_retry_after_has_none() -> None:
    assert classify(_status_error(429)).retry_after is None
    assert classify(RateLimited("slow down")).retry_after is None


def test_unavailable_carries_when_to_try_again() -> None:
    assert classify(Unavailable("open", retry_at=NOW)).retry_at == NOW
