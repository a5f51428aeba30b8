"""Retry policies: how often and how long to wait, per error kind, overridable per handler."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.conf import settings

from apps.resilience.taxonomy import ErrorKind


class Strategy(StrEnum):
    EXPONENTIAL = "exponential"  # full jitter: uniform(0, min(cap, base * 2**(n-1)))
    LINEAR = "linear"  # base * n, capped
    FIXED = "fixed"  # base
    RETRY_AFTER = "retry_after"  # what the dependency asked for, else base
    NONE = "none"  # never retry


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry after the ``attempt``-th failed attempt (1-based), and how many in all."""

    strategy: Strategy
    max_attempts: int = 1
    base_delay: float = 1.0
    max_delay: float = 60.0
    # Kinds like ``unavailable`` wait without spending attempts.
    spends_attempts: bool = True

    def retries(self, attempt: int) -> bool:
        """Return whether another attempt follows the ``attempt``-th failure."""
        return self.strategy is not Strategy.NONE and (
            not self.spends_attempts or attempt < self.max_attempts
        )

    def ceiling(self, attempt: int, retry_after: float | None = None) -> float:
        """Return the longest countdown this policy may choose after ``attempt`` failures."""
        scale = settings.RESILIENCE_DELAY_SCALE
        if self.strategy is Strategy.EXPONENTIAL:
            return min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * scale
        if self.strategy is Strategy.LINEAR:
            return min(self.max_delay, self.base_delay * attempt) * scale
        if self.strategy is Strategy.RETRY_AFTER and retry_after is not None:
            return min(self.max_delay * scale, retry_after)  # the server's word isn't scaled
        return min(self.max_delay, self.base_delay) * scale

    def countdown(self, attempt: int, retry_after: float | None = None) -> float:
        """Return the countdown to use after the ``attempt``-th failure."""
        ceiling = self.ceiling(attempt, retry_after)
        if self.strategy is Strategy.EXPONENTIAL:
            return random.uniform(0, ceiling)  # full jitter spreads a herd of retries
        return ceiling

    @classmethod
    def from_setting(cls, value: dict[str, Any]) -> RetryPolicy:
        return cls(**{**value, "strategy": Strategy(value["strategy"])})


def policy_for(
    kind: ErrorKind, overrides: dict[ErrorKind, RetryPolicy] | None = None
) -> RetryPolicy:
    """Return the handler's policy for ``kind``, else the default in the settings."""
    if overrides and kind in overrides:
        return overrides[kind]
    return RetryPolicy.from_setting(settings.RESILIENCE_RETRY_POLICIES[kind.value])
