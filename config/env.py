"""Strict readers for environment variables: a value that can't be used is an error.

Each reader returns the variable's value (or the default when it is unset or empty) and
raises one ``ImproperlyConfigured`` naming the variable and what it accepts otherwise, so a
bad setting stops ``manage.py check``, the worker and gunicorn at start-up instead of failing
every request later. Defaults are trusted: they are written in ``config/settings/``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# What apps/api/throttles.py parses: a positive count, then a period it reads by its
# first letter. Only these spellings, so "5/month" can't quietly mean five a minute.
_RATE = re.compile(r"(?P<count>[0-9]+)/(s|sec|seconds?|m|min|minutes?|h|hour|hours|d|day|days)")


def _raw(name: str) -> str:
    return os.environ.get(name, "").strip()


def env_str(name: str, default: str = "") -> str:
    """Return the variable's value, or `default` when it is unset or empty."""
    return os.environ.get(name, "") or default


def env_bool(name: str, default: bool) -> bool:
    """Return the variable as a boolean; anything but a known spelling is an error."""
    raw = _raw(name).lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return the variable as an integer within [minimum, maximum]; anything else is an error."""
    raw = _raw(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from exc
    _check_bounds(name, raw, value, minimum=minimum, maximum=maximum)
    return value


def env_float(
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> float:
    """Return the variable as a finite number within [minimum, maximum] and greater than
    `above`; anything else is an error."""
    raw = _raw(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from exc
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name}={raw!r} is not a finite number")
    _check_bounds(name, raw, value, minimum=minimum, maximum=maximum)
    if above is not None and value <= above:
        raise ImproperlyConfigured(f"{name}={raw!r} must be greater than {above:g}")
    return value


def _check_bounds(
    name: str, raw: str, value: float, *, minimum: float | None, maximum: float | None
) -> None:
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum:g}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at most {maximum:g}")


def env_list(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated variable as a list of non-empty, stripped items."""
    raw = os.environ.get(name, "")
    if not raw.strip():
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, allowed: Sequence[str]) -> str:
    """Return the variable as one of `allowed` (matched ignoring case, returned as written
    there); any other value is an error."""
    raw = _raw(name)
    if not raw:
        return default
    known = {choice.lower(): choice for choice in allowed}
    if raw.lower() not in known:
        raise ImproperlyConfigured(f"{name}={raw!r} is not one of: {', '.join(allowed)}")
    return known[raw.lower()]


def env_choices(name: str, default: list[str], allowed: Sequence[str]) -> list[str]:
    """Return a comma-separated variable as a list of `allowed` values, each once (matched
    ignoring case); an item not in `allowed` is an error naming every such item."""
    known = {choice.lower(): choice for choice in allowed}
    items = env_list(name, default)
    unknown = [item for item in items if item.lower() not in known]
    if unknown:
        raise ImproperlyConfigured(
            f"{name} lists unknown value(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed)}"
        )
    return list(dict.fromkeys(known[item.lower()] for item in items))


def env_rate(name: str, default: str) -> str:
    """Return the variable as a DRF throttle rate, "N/period": N a positive integer, the
    period s, sec, m, min, h, hour, d or day (or second, minute, hours...)."""
    raw = _raw(name)
    if not raw:
        return default
    rate = raw.lower()  # the throttles read the period's first letter as written
    match = _RATE.fullmatch(rate)
    if match is None or int(match["count"]) < 1:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a rate: write N/period, N a positive whole number and "
            "the period s, sec, m, min, h, hour, d or day (e.g. 100/hour)"
        )
    return rate


def env_url(name: str, default: str, schemes: Sequence[str], *, several: bool = False) -> str:
    """Return the variable as a URL with one of `schemes`; with `several`, as URLs separated
    by commas or semicolons (a Redis cache's replicas, a broker's fail-over list), each
    checked. The error never repeats the value: URLs carry passwords."""
    raw = _raw(name)
    if not raw:
        return default
    urls = re.split(r"[,;]", raw) if several else [raw]
    for url in urls:
        _check_url(name, url.strip(), schemes)
    return raw


def env_url_list(name: str, default: list[str], schemes: Sequence[str]) -> list[str]:
    """Return a comma-separated variable as a list of URLs, each with one of `schemes`."""
    urls = env_list(name, default)
    for url in urls:
        _check_url(name, url, schemes)
    return urls


def _check_url(name: str, url: str, schemes: Sequence[str]) -> None:
    accepted = ", ".join(f"{scheme}://" for scheme in schemes)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that isn't a number
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not a valid URL (use {accepted})") from exc
    if parts.scheme.lower() not in schemes:
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ImproperlyConfigured(f"{name} has {shown}; it must start with one of {accepted}")
    if parts.scheme.lower() in {"http", "https"} and not parts.hostname:
        raise ImproperlyConfigured(f"{name} has no host name")


def env_emails(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated variable as a list of email addresses; one that Django's
    `validate_email` refuses is an error naming it."""
    emails = env_list(name, default)
    for email in emails:
        try:
            validate_email(email)
        except ValidationError as exc:
            raise ImproperlyConfigured(
                f"{name} lists {email!r}, which is not an email address (user@example.com)"
            ) from exc
    return emails
