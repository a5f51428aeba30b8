"""Newest-first cursor pages of sagas (see ``apps.api.pagination``)."""

from __future__ import annotations

from apps.api.pagination import NewestFirst


class NewestSagasFirst(NewestFirst):
    ordering = ("-created_at", "-id")
