"""Rate limits of the token endpoint: per client address and per username asked for.

Both count every attempt, successful or not, before the password is checked. Counting
first is what makes the limit hold under concurrent guesses: the counter is increased
atomically, so no two requests see the same count (a "check, then count the failure"
scheme lets a burst of parallel guesses all pass the check). Successes count too because
refunding them would let anyone with one valid account reset their address's counter
between guesses at other accounts, and because each success creates a token row. A client
needs few logins: a token lasts ``API_TOKEN_TTL_HOURS``.

The rates are ``DEFAULT_THROTTLE_RATES["login_address"]`` and ``["login_username"]``. Like
every API throttle they fail open when the cache is down (see ``apps.api.throttles``).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import ValidationError

from apps.api.throttles import FixedWindowThrottle

if TYPE_CHECKING:
    from rest_framework.request import Request


def username_client(username: str) -> str:
    """Return the throttle client of ``username``: a hash, so no username sits in the cache.

    Normalized and case-folded, so "Alice" and "alice" share one budget.
    """
    folded = unicodedata.normalize("NFKC", username).casefold()
    return hashlib.sha256(folded.encode()).hexdigest()


def requested_username(request: Request) -> str | None:
    """Return the username of a token request as the view reads it (trimmed, a number
    as text), or ``None`` when there is none: padding can't dodge the per-username count."""
    data = request.data
    raw = data.get("username") if isinstance(data, Mapping) else None
    try:
        username = AuthTokenSerializer().fields["username"].to_internal_value(raw)
    except ValidationError:
        return None
    return username or None


class LoginAddressThrottle(FixedWindowThrottle):
    """Token requests per client address, ``login_address`` rate: slows guessing across users."""

    scope = "login_address"

    def client(self, request: Request) -> str | None:
        return self.get_ident(request)


class LoginUsernameThrottle(FixedWindowThrottle):
    """Token requests per username, from any address, ``login_username`` rate."""

    scope = "login_username"

    def client(self, request: Request) -> str | None:
        username = requested_username(request)
        if username is None:
            return None  # the view refuses it as invalid before any password check
        return username_client(username)
