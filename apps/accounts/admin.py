"""Tokens in the console: metadata only, and revocation by deleting.

knox's own admin lists digests and has an add form that shows a new token's key to the
operator who made it, that is, a way to sign in as anyone. Ours shows who, when and the
key's first characters (knox's ``token_key``, which alone authenticates nothing), and
neither creates nor edits tokens: a key exists only in the response that issued it.
"""

from __future__ import annotations

import knox.admin  # noqa: F401  (registers knox's admin first, so it can be replaced here)
from django.contrib import admin
from django.http import HttpRequest
from knox.models import AuthToken

admin.site.unregister(AuthToken)


@admin.register(AuthToken)
class TokenAdmin(admin.ModelAdmin):
    list_display = ("user", "token_key", "created", "expiry")
    list_select_related = ("user",)
    list_filter = ("created", "expiry")
    search_fields = ("user__username",)
    ordering = ("-created",)
    fields = ("user", "token_key", "created", "expiry")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuthToken | None = None) -> bool:
        return False
