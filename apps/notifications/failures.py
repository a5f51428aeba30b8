"""What a user is told about a failed delivery: one plain sentence, never the internals.

The exception itself (addresses, ports, class names, the HTTP client's wording) stays with
the operators: in the delivery attempts, the dead letter, the notification's events and the
logs. A user sees only these messages in ``GET /api/v1/notifications/``, so Backstop can't be
used to tell an open port from a closed one: every failure to reach an endpoint reads alike.
"""

from __future__ import annotations

import httpx

from apps.notifications.channels import NoTarget, Redirected
from apps.notifications.webhooks import HostDoesNotResolve, UnacceptableUrl
from apps.resilience.taxonomy import SecurityViolation

UNREACHABLE = "the webhook endpoint could not be reached"
WEBHOOK_FAILED = "the webhook could not be delivered"
EMAIL_FAILED = "the email could not be delivered"


def user_message(channel: str, exc: BaseException) -> str:
    """Return what to tell the notification's owner about ``exc`` on ``channel``."""
    if channel == "email":
        return "your account has no email address" if isinstance(exc, NoTarget) else EMAIL_FAILED
    return _webhook_message(exc)


def fallback(channel: str) -> str:
    """Return the message of a failure nothing more is known about."""
    return EMAIL_FAILED if channel == "email" else WEBHOOK_FAILED


def _webhook_message(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"the webhook endpoint answered {exc.response.status_code}"
    if isinstance(exc, Redirected):
        return (
            f"the webhook endpoint answered a redirect ({exc.status_code}), which is not followed"
        )
    if isinstance(exc, httpx.TransportError):  # refused, timed out, TLS, reset: all alike
        return UNREACHABLE
    if isinstance(exc, HostDoesNotResolve):
        return "the webhook host name does not resolve"
    if isinstance(exc, SecurityViolation):
        return "the webhook URL leads to a non-public address, so it was not called"
    if isinstance(exc, UnacceptableUrl):
        return f"the webhook URL is not accepted: {exc}"  # our own words about the user's URL
    if isinstance(exc, NoTarget):
        return "no webhook URL is set"
    return WEBHOOK_FAILED
