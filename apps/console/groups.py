"""The console's two groups: "viewer" looks, "operator" also acts (retry, resolve, discard,
acknowledge, resume, compensate, force, edit schedules).

Membership gives permissions only: a member also needs ``is_staff`` to enter the console.
``ensure_groups`` is idempotent and only ever adds permissions, so an operator's own
additions to a group survive it. It runs from the console's data migration and again after
every ``migrate`` (``post_migrate``): permissions of models added later, and any custom
permission an app declares, join the groups without a new migration.
"""

from __future__ import annotations

from typing import Any

VIEWER = "viewer"
OPERATOR = "operator"
# Apps whose every model the console shows: viewers see them all.
CONSOLE_APPS = ("resilience", "sagas", "eventstore", "console", "django_celery_beat")
# Models an operator changes through the admin's audited actions (and schedules through
# django-celery-beat's admin): retry / resolve / discard dead letters, acknowledge
# escalations, resume / compensate sagas, rebuild projections, force breakers.
OPERATOR_CHANGES = (
    ("resilience", "deadletter"),
    ("resilience", "escalation"),
    ("resilience", "breakertransition"),
    ("sagas", "sagainstance"),
    ("eventstore", "projectionstate"),
    ("django_celery_beat", "periodictask"),
    ("django_celery_beat", "intervalschedule"),
    ("django_celery_beat", "crontabschedule"),
)
OPERATOR_ADDS = (
    ("django_celery_beat", "intervalschedule"),
    ("django_celery_beat", "crontabschedule"),
)
DEFAULT_ACTIONS = ("add", "change", "delete", "view")


def ensure_groups(apps: Any) -> None:
    """Create "viewer" and "operator" if missing and add the permissions they lack.

    ``apps`` is a migration's app registry (or the real one); permissions not created yet
    are skipped here and added by the next run (``post_migrate`` runs after they are)."""
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    console = permission_model.objects.filter(content_type__app_label__in=CONSOLE_APPS)
    viewing = list(console.filter(codename__startswith="view_"))
    custom = [p for p in console if not p.codename.startswith(_default_prefixes())]
    changes = [
        *_named(permission_model, "change", OPERATOR_CHANGES),
        *_named(permission_model, "add", OPERATOR_ADDS),
    ]
    viewer, _ = group_model.objects.get_or_create(name=VIEWER)
    viewer.permissions.add(*viewing)
    operator, _ = group_model.objects.get_or_create(name=OPERATOR)
    operator.permissions.add(*viewing, *changes, *custom)


def _default_prefixes() -> tuple[str, ...]:
    return tuple(f"{action}_" for action in DEFAULT_ACTIONS)


def _named(permission_model: Any, action: str, models: tuple[tuple[str, str], ...]) -> list[Any]:
    """Return the ``action`` permissions of ``models`` ((app label, model name)) that exist."""
    found = []
    for app_label, model in models:
        permission = permission_model.objects.filter(
            content_type__app_label=app_label, codename=f"{action}_{model}"
        ).first()
        if permission is not None:
            found.append(permission)
    return found


def remove_groups(apps: Any) -> None:
    """Delete both groups (the data migration's reverse)."""
    apps.get_model("auth", "Group").objects.filter(name__in=[VIEWER, OPERATOR]).delete()
