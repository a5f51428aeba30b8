"""Recorded events can't be changed or removed, through the ORM or around it."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from apps.eventstore.exceptions import AppendOnlyViolation
from apps.eventstore.models import Event
from apps.eventstore.repository import Repository
from apps.eventstore.store import CommandContext
from tests.eventstore.counter import Counter

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored() -> Event:
    counter = Counter.open("immutable")
    Repository(Counter).save(counter, CommandContext())
    return Event.objects.get(stream_id=counter.id)


def test_saving_a_changed_event_is_refused(stored: Event) -> None:
    stored.data = {"label": "tampered"}
    with pytest.raises(AppendOnlyViolation):
        stored.save()


def test_deleting_an_event_is_refused(stored: Event) -> None:
    with pytest.raises(AppendOnlyViolation):
        stored.delete()


def test_bulk_update_and_delete_are_refused(stored: Event) -> None:
    with pytest.raises(AppendOnlyViolation):
        Event.objects.filter(pk=stored.pk).update(type="x")
    with pytest.raises(AppendOnlyViolation):
        Event.objects.filter(pk=stored.pk).delete()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE eventstore_event SET data = '{}' WHERE position = %s",
        "DELETE FROM eventstore_event WHERE position = %s",
    ],
)
def test_the_database_refuses_raw_sql_changes(stored: Event, sql: str) -> None:
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, [stored.pk])
    assert Event.objects.get(pk=stored.pk).data == stored.data
