"""Token authentication with a short-lived cache of the lookups, per process.

knox checks a token with two queries (the token and its user, then every token of that
user, to delete expired ones) and a SHA-512 digest; on a busy API that is a large share
of a request. A token that checked out is remembered by its digest, in this process only,
for ``API_TOKEN_CACHE_SECONDS`` (and never past the token's own expiry), so a client's
next requests in that window skip the database.

The price is the revocation window. A token revoked in this process (``DELETE
/api/v1/auth/token/``, the admin's delete, a user saved or deleted, e.g. deactivated) is
forgotten here at once; another process that cached it keeps accepting it for at most
``API_TOKEN_CACHE_SECONDS`` (5 by default), as does this one after a change that sends no
signal (``QuerySet.update``, a group's permissions). ``API_TOKEN_CACHE_SECONDS=0`` turns
the cache off: every request asks the database, and a revocation applies everywhere at
once.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from rest_framework import exceptions

# Enough for every client of one process; the least recently used goes first.
MAX_CACHED_TOKENS = 4096


@dataclass(frozen=True)
class _Checked:
    user: Any
    token: AuthToken
    until: float  # time.monotonic() past which the database is asked again


class _Cache:
    """Tokens that checked out, by digest; thread-safe (gunicorn may run threads).

    Every ``forget`` moves a counter on: a lookup that began before a forget doesn't
    ``put`` what it read, which may be the row just revoked.
    """

    def __init__(self) -> None:
        self._entries: OrderedDict[str, _Checked] = OrderedDict()
        self._lock = threading.Lock()
        self.forgets = 0

    def get(self, digest: str) -> _Checked | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry.until <= time.monotonic() or (
                entry.token.expiry is not None and entry.token.expiry <= timezone.now()
            ):
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry

    def put(self, digest: str, entry: _Checked, *, forgets: int) -> None:
        """Remember ``entry``, unless something was forgotten since ``forgets`` was read."""
        with self._lock:
            if forgets != self.forgets:
                return
            self._entries[digest] = entry
            self._entries.move_to_end(digest)
            while len(self._entries) > MAX_CACHED_TOKENS:
                self._entries.popitem(last=False)

    def forget(self, *, digest: str | None = None, user_pk: Any = None) -> None:
        with self._lock:
            self.forgets += 1
            if digest is not None:
                self._entries.pop(digest, None)
            if user_pk is not None:
                for key in [k for k, e in self._entries.items() if e.user.pk == user_pk]:
                    del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self.forgets += 1
            self._entries.clear()


checked_tokens = _Cache()


class CachedTokenAuthentication(TokenAuthentication):
    """knox's ``TokenAuthentication``, remembering tokens that checked out (see the module)."""

    def authenticate_credentials(self, token: bytes) -> tuple[Any, AuthToken]:
        try:  # knox would let a key that isn't UTF-8 raise (a 500)
            key = token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        seconds = settings.API_TOKEN_CACHE_SECONDS
        if seconds <= 0:
            return super().authenticate_credentials(token)
        digest = hash_token(key)
        entry = checked_tokens.get(digest)
        if entry is not None:
            return _copies(entry.user, entry.token)
        forgets = checked_tokens.forgets
        user, auth_token = super().authenticate_credentials(token)
        kept_user, kept_token = _copies(user, auth_token)
        checked_tokens.put(
            digest,
            _Checked(kept_user, kept_token, time.monotonic() + seconds),
            forgets=forgets,
        )
        return user, auth_token


def _copies(user: Any, token: AuthToken) -> tuple[Any, AuthToken]:
    """Return copies of a user and its token: nothing a request sets on its own (cached
    permissions, a deleted token's cleared key) reaches the cache or another request."""
    user, token = copy.copy(user), copy.copy(token)
    token.user = user
    return user, token


def _forget_token(sender: type, instance: AuthToken, **kwargs: Any) -> None:
    digest = instance.digest
    checked_tokens.forget(digest=digest)
    # Again once committed: a lookup between the delete and its commit read the old row.
    transaction.on_commit(lambda: checked_tokens.forget(digest=digest))


def _forget_user(sender: type, instance: Any, **kwargs: Any) -> None:
    pk = instance.pk
    checked_tokens.forget(user_pk=pk)
    transaction.on_commit(lambda: checked_tokens.forget(user_pk=pk))


def connect_signals() -> None:
    """Forget a token in this process when it is deleted, and a user's when it changes."""
    post_delete.connect(_forget_token, sender=AuthToken, dispatch_uid="accounts.forget_token")
    user_model = get_user_model()
    post_save.connect(_forget_user, sender=user_model, dispatch_uid="accounts.forget_saved_user")
    post_delete.connect(_forget_user, sender=user_model, dispatch_uid="accounts.forget_user")


class CachedTokenScheme(KnoxTokenScheme):
    """The OpenAPI schema's description of the token header: knox's, for the subclass."""

    target_class = "apps.accounts.authentication.CachedTokenAuthentication"
