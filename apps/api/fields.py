"""Serializer fields and a serializer base every app's API uses."""

from __future__ import annotations

from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

from apps.api.storable import storable_str


class TextField(serializers.CharField):
    """A CharField that takes only strings, and only text PostgreSQL can store."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):  # CharField would quietly turn 5 into "5"
            self.fail("not_a_string")
        try:
            storable_str(data)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc), code="invalid") from None
        return super().to_internal_value(data)


class AwareDateTimeField(serializers.DateTimeField):
    """A date and time that must say its time zone: a naive one is ambiguous."""

    default_error_messages = {"naive": "Include a time zone, e.g. 2026-01-31T09:00:00Z or +02:00."}

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                self.fail("naive")
        return super().to_internal_value(value)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it doesn't know, reported with every other field error."""

    def to_internal_value(self, data: Any) -> Any:
        unknown = {}
        if isinstance(data, dict):
            unknown = {
                str(name): ["Unknown field."] for name in sorted(set(data) - set(self.fields))
            }
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from exc
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class StrictSerializerExtension(OpenApiSerializerExtension):
    """Documents a StrictSerializer's body as closed: ``additionalProperties: false``."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}
