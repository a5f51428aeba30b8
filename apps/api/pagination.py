"""Newest-first cursor pages: a cursor the API didn't make is a 400 naming ``cursor``."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

from apps.api.storable import storable_offset, storable_text


class NewestFirst(CursorPagination):
    """Pages of fifty, newest ``created_at`` first; subclasses name their tie-breaker
    (``ordering = ("-created_at", "-<primary key>")``)."""

    ordering: tuple[str, ...] = ("-created_at", "-id")
    page_size = 50

    def decode_cursor(self, request: Request) -> Cursor | None:
        """Return the request's cursor; one not made here is a 400 naming ``cursor``.

        DRF checks the cursor's shape but not its position, which the query compares
        with ``created_at``: a position PostgreSQL can't read would be a 500.
        """
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise _invalid_cursor() from None
        # The stubs type a position as int; DRF decodes it from the cursor as text.
        position = cast(str | None, cursor.position if cursor is not None else None)
        if position is not None and not _created_at(position):
            raise _invalid_cursor()
        return cursor


def _invalid_cursor() -> serializers.ValidationError:
    return serializers.ValidationError({"cursor": ["Invalid cursor; start again without one."]})


def _created_at(position: str) -> datetime | None:
    """Return a cursor's position as the aware date and time it names, or None."""
    if not storable_text(position):  # Python's parser skips a NUL inside a date
        return None
    try:
        value = parse_datetime(position)
    except ValueError:  # a date that doesn't exist: month 13, February 30
        return None
    if value is None or value.tzinfo is None or not storable_offset(value):
        return None
    return value
