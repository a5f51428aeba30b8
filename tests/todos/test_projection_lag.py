"""Projection lag counts what the projection has left to read, not the whole log's head."""

from __future__ import annotations

import pytest

from apps.eventstore import following, projections
from apps.eventstore.store import CommandContext
from apps.todos import services
from tests.support.probe import open_counters

pytestmark = pytest.mark.django_db


def _apply_everything(django_capture_on_commit_callbacks) -> None:
    """Apply every todo event of the log to the live generation, as the follower does."""
    with django_capture_on_commit_callbacks(execute=True):
        following.follow("todos")


def test_other_apps_events_after_the_checkpoint_are_no_lag(
    django_user_model, django_capture_on_commit_callbacks
) -> None:
    owner = django_user_model.objects.create_user("lagging")
    context = CommandContext(actor_id=str(owner.pk))
    services.create_todo(owner_id=owner.pk, context=context, title="one")
    _apply_everything(django_capture_on_commit_callbacks)
    open_counters(3)

    assert projections.lag("todos") == 0

    services.create_todo(owner_id=owner.pk, context=context, title="two")
    assert projections.lag("todos") == 1
    _apply_everything(django_capture_on_commit_callbacks)
    assert projections.lag("todos") == 0
