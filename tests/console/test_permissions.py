"""The console's groups: "viewer" sees the console's models, "operator" also acts on them.
Made by a data migration and kept complete after every migrate (post_migrate)."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps as global_apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.messages import get_messages
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.resilience.models import DeadLetter
from apps.sagas.models import SagaAction, SagaInstance
from tests.sagas.ops import saga_row

pytestmark = pytest.mark.django_db
SAGAS = reverse("admin:sagas_sagainstance_changelist")
VIEWED = [
    "resilience.view_deadletter",
    "resilience.view_delivery",
    "resilience.view_attempt",
    "resilience.view_escalation",
    "resilience.view_breakertransition",
    "sagas.view_sagainstance",
    "eventstore.view_outboxmessage",
    "eventstore.view_event",
    "django_celery_beat.view_periodictask",
]
CHANGED = [
    "resilience.change_deadletter",
    "resilience.change_escalation",
    "sagas.change_sagainstance",
    "django_celery_beat.change_periodictask",
]


def codenames(group: str) -> set[str]:
    rows = Group.objects.get(name=group).permissions.values_list(
        "content_type__app_label", "codename"
    )
    return {f"{app}.{codename}" for app, codename in rows}


def test_the_groups_exist_after_migrate_with_their_permissions() -> None:
    viewer, operator = codenames("viewer"), codenames("operator")

    assert set(VIEWED) <= viewer
    assert all(".view_" in name for name in viewer)
    assert viewer <= operator
    assert set(CHANGED) <= operator
    assert not any(name.split(".")[1].startswith("delete_") for name in operator)
    assert "todos.view_todo" not in operator  # people's data is not the console's


def test_every_custom_permission_of_the_console_apps_is_the_operators() -> None:
    custom = Permission.objects.filter(content_type__app_label__in=["resilience", "sagas"]).exclude(
        codename__regex=r"^(add|change|delete|view)_"
    )

    for permission in custom:
        assert f"{permission.content_type.app_label}.{permission.codename}" in codenames("operator")


def test_the_data_migration_makes_the_groups_with_the_models_of_its_time() -> None:
    executor = MigrationExecutor(connection)
    migration = executor.loader.get_migration("console", "0003_operator_groups")
    state = executor.loader.project_state(("console", "0003_operator_groups"), at_end=False)
    Group.objects.filter(name__in=["viewer", "operator"]).delete()

    migration.operations[0].code(state.apps, None)

    assert set(VIEWED) <= codenames("viewer")
    assert set(CHANGED) <= codenames("operator")


def test_a_migrate_restores_the_groups_and_adds_nothing_twice() -> None:
    Group.objects.filter(name="viewer").delete()
    operator = Group.objects.get(name="operator")
    operator.permissions.remove(Permission.objects.get(codename="change_sagainstance"))
    before = codenames("operator")

    emit_post_migrate_signal(0, False, "default", apps=global_apps)
    emit_post_migrate_signal(0, False, "default", apps=global_apps)

    assert set(VIEWED) <= codenames("viewer")
    assert codenames("operator") == before | {"sagas.change_sagainstance"}


def member(name: str, group: str) -> Client:
    user = get_user_model().objects.create_user(name, password=f"pw-{name}-1", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return client


def notices(page: Any) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(page.wsgi_request)]


def test_a_viewer_sees_the_console_but_runs_no_action(dead_letter_page: str) -> None:
    viewer = member("victor", "viewer")
    saga = saga_row(state="completed")

    assert viewer.get(reverse("admin:index")).status_code == 200
    assert viewer.get(dead_letter_page).status_code == 200
    listing = viewer.get(SAGAS)
    assert listing.status_code == 200
    assert b"resume_selected" not in listing.content
    page = viewer.post(SAGAS, {"action": "resume_selected", "_selected_action": [saga.pk]})

    # Without the change permission the list offers no action, so the POST runs none.
    assert page.status_code == 200
    assert not any("resumed" in text for _, text in notices(page))
    assert not SagaAction.objects.exists()


def test_an_operator_runs_the_actions(dead_letter_page: str) -> None:
    operator = member("olga", "operator")
    saga = saga_row(state="completed")

    assert operator.get(dead_letter_page).status_code == 200
    assert b"resume_selected" in operator.get(SAGAS).content
    page = operator.post(SAGAS, {"action": "resume_selected", "_selected_action": [saga.pk]})

    # The action ran: the service refused this completed saga, per saga, as it should.
    got = notices(page)
    assert ("success", "0 saga(s) resumed.") in got
    assert any(level == "warning" and str(saga.pk) in text for level, text in got)
    assert SagaInstance.objects.get(pk=saga.pk).state == "completed"


@pytest.fixture
def dead_letter_page() -> str:
    now = timezone.now()
    letter = DeadLetter.objects.create(
        handler="test.perms",
        kind="transient",
        severity="low",
        exception_type="BoomError",
        fingerprint="perms",
        first_failed_at=now,
        last_failed_at=now,
    )
    return reverse("admin:resilience_deadletter_change", args=[letter.pk])
