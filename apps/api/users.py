"""The signed-in user of an API request, typed: ``request.user`` may be anonymous."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request


def request_user(request: Request) -> User:
    """Return the request's authenticated user; raise ``NotAuthenticated`` for an anonymous one.

    The views behind ``IsAuthenticated`` never see an anonymous user; this narrows the type.
    """
    user = request.user
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
        raise NotAuthenticated()
    return user


def request_user_id(request: Request) -> int:
    """Return the id of the request's authenticated user; raise ``NotAuthenticated`` otherwise."""
    return request_user(request).pk
