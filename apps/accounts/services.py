"""API tokens: issue one (its key is returned once and stored only as a hash), revoke one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from knox.models import AuthToken


@dataclass(frozen=True)
class IssuedToken:
    key: str  # the only copy: the database keeps its hash and its first characters
    expiry: datetime


def issue_token(*, user: AbstractBaseUser) -> IssuedToken:
    """Create a token for ``user`` lasting ``API_TOKEN_TTL_HOURS``; return its key and expiry."""
    row, key = AuthToken.objects.create(
        user=user, expiry=timedelta(hours=settings.API_TOKEN_TTL_HOURS)
    )
    return IssuedToken(key=key, expiry=row.expiry)


def revoke_token(*, token: AuthToken) -> None:
    """Delete ``token``: its key authenticates nothing from now on."""
    token.delete()
