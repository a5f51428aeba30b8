"""The list filters of GET /api/v1/todos/."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django.utils import timezone
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.request import Request
from rest_framework.views import APIView

from apps.api.storable import OFFSET_MESSAGE, storable_offset
from apps.todos.fields import PRIORITIES
from apps.todos.models import TodoView
from apps.todos.rules import TodoStatus, overdue_q


class StorableIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date and time whose offset PostgreSQL accepts (Python's range is wider)."""

    default_error_messages = {"offset": OFFSET_MESSAGE}

    def to_python(self, value: Any) -> datetime | None:
        result = super().to_python(value)
        if result is not None and not storable_offset(result):
            raise forms.ValidationError(self.error_messages["offset"], code="offset")
        return result


class StorableIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = StorableIsoDateTimeField


class TodoFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        choices=[(s, s) for s in TodoStatus.values], method="filter_status"
    )
    priority = django_filters.ChoiceFilter(choices=[(p, p) for p in PRIORITIES])
    tag = django_filters.CharFilter(method="filter_tag", max_length=40)
    due_before = StorableIsoDateTimeFilter(field_name="due_at", lookup_expr="lt")
    due_after = StorableIsoDateTimeFilter(field_name="due_at", lookup_expr="gte")
    overdue = django_filters.BooleanFilter(method="filter_overdue")
    search = django_filters.CharFilter(method="filter_search", max_length=200)

    class Meta:
        model = TodoView
        fields: list[str] = []

    def filter_queryset(self, queryset: QuerySet[TodoView]) -> QuerySet[TodoView]:
        if not self.form.cleaned_data.get("status"):
            queryset = self.unfiltered(queryset)
        return super().filter_queryset(queryset)

    @staticmethod
    def unfiltered(queryset: QuerySet[TodoView]) -> QuerySet[TodoView]:
        """The list without a filter: deleted todos are shown only on request."""
        return queryset.exclude(status=TodoStatus.DELETED)

    def filter_status(
        self, queryset: QuerySet[TodoView], name: str, value: str
    ) -> QuerySet[TodoView]:
        return queryset.filter(status=value)

    def filter_tag(self, queryset: QuerySet[TodoView], name: str, value: str) -> QuerySet[TodoView]:
        return queryset.filter(tags_text__contains=f"|{value.strip().lower()}|")

    def filter_overdue(
        self, queryset: QuerySet[TodoView], name: str, value: bool
    ) -> QuerySet[TodoView]:
        overdue = overdue_q(timezone.now())
        return queryset.filter(overdue) if value else queryset.exclude(overdue)

    def filter_search(
        self, queryset: QuerySet[TodoView], name: str, value: str
    ) -> QuerySet[TodoView]:
        for word in value.lower().split():
            queryset = queryset.filter(search_text__contains=word)
        return queryset


class TodoFilterBackend(DjangoFilterBackend):
    """Builds and validates the filter form only when the query string names a filter.

    Most list requests carry none; they get ``TodoFilter.unfiltered`` directly.
    """

    @staticmethod
    def filters_asked(request: Request) -> bool:
        """Return whether the request's query string names a filter."""
        return bool(request.query_params.keys() & TodoFilter.base_filters.keys())

    def filter_queryset(self, request: Request, queryset: QuerySet, view: APIView) -> QuerySet:
        if self.filters_asked(request):
            return super().filter_queryset(request, queryset, view)
        return TodoFilter.unfiltered(queryset)
