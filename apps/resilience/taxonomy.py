"""The error taxonomy: what kind of failure happened, and how bad it is.

Every exception a handler can raise maps to one ``ErrorKind`` (see ``classify``); the kind
decides the retry policy and, at exhaustion, the dead letter's severity.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models


class ErrorKind(models.TextChoices):
    TRANSIENT = "transient"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    BUSINESS_RULE = "business_rule"
    VALIDATION = "validation"
    NOT_FOUND = "not_found"
    AUTHORIZATION = "authorization"
    SYSTEM = "system"
    CONFIGURATION = "configuration"
    CORRUPTION = "corruption"
    SECURITY = "security"


class Severity(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


# Kinds that say nothing about a dependency's health: they never trip a circuit breaker.
NOT_THE_DEPENDENCYS_FAULT = frozenset(
    {ErrorKind.VALIDATION, ErrorKind.BUSINESS_RULE, ErrorKind.NOT_FOUND}
)
# Kinds whose dead letters need a person before anything else happens.
MANUAL_INTERVENTION = frozenset(
    {ErrorKind.SYSTEM, ErrorKind.CONFIGURATION, ErrorKind.CORRUPTION, ErrorKind.SECURITY}
)


class BackstopError(Exception):
    """Base of Backstop's own errors; each subclass names its kind."""

    kind: ErrorKind = ErrorKind.SYSTEM


class TransientError(BackstopError):
    kind = ErrorKind.TRANSIENT


class DependencyTimeout(BackstopError):
    kind = ErrorKind.TIMEOUT


class RateLimited(BackstopError):
    """A dependency asked us to slow down; ``retry_after`` is seconds from now, if it said."""

    kind = ErrorKind.RATE_LIMITED

    def __init__(
        self, message: str, *, retry_after: float | None = None, dependency: str = ""
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.dependency = dependency


class Unavailable(BackstopError):
    """A dependency is known to be down (breaker open, cooldown): try again at ``retry_at``
    (``None`` when nobody knows when, e.g. a breaker forced open)."""

    kind = ErrorKind.UNAVAILABLE

    def __init__(self, message: str, *, retry_at: datetime | None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class BusinessRuleViolation(BackstopError):
    kind = ErrorKind.BUSINESS_RULE


class InvalidInput(BackstopError):
    kind = ErrorKind.VALIDATION


class NotFound(BackstopError):
    kind = ErrorKind.NOT_FOUND


class Forbidden(BackstopError):
    kind = ErrorKind.AUTHORIZATION


class SystemFault(BackstopError):
    kind = ErrorKind.SYSTEM


class ConfigurationError(BackstopError):
    kind = ErrorKind.CONFIGURATION


class Corruption(BackstopError):
    """A message or payload that can never be processed (a poison message)."""

    kind = ErrorKind.CORRUPTION


class SecurityViolation(BackstopError):
    kind = ErrorKind.SECURITY


class WorkerLostRepeatedly(BackstopError):
    kind = ErrorKind.SYSTEM
