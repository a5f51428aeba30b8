"""What every console page shares: the admin's context and the operator check."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest


def page_context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    """Return the admin's common context (site header, user links, theme) and ``extra``."""
    return {**admin.site.each_context(request), "title": title, **extra}


def require_permission(request: HttpRequest, permission: str) -> None:
    """Raise ``PermissionDenied`` (403) unless the user holds ``permission``."""
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"needs the {permission} permission")
