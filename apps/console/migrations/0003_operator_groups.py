"""Create the console's "viewer" and "operator" groups (apps.console.groups).

Permissions are made by ``post_migrate``, after every migration has run, so they are created
here first for the console's apps; ``ensure_groups`` runs again after each ``migrate`` for
the models and custom permissions that come later.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management import create_permissions
from django.db import migrations

from apps.console.groups import CONSOLE_APPS, ensure_groups, remove_groups


def install(apps: Any, schema_editor: Any) -> None:
    for label in CONSOLE_APPS:
        app_config = apps.get_app_config(label)
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = True  # create_permissions skips an app without models
        try:
            create_permissions(app_config, apps=apps, verbosity=0)
        finally:
            app_config.models_module = models_module
    ensure_groups(apps)


def uninstall(apps: Any, schema_editor: Any) -> None:
    remove_groups(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0002_retention_schedule"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("resilience", "0006_severity_raised_action"),
        ("sagas", "0002_recover_overdue_schedule"),
        ("eventstore", "0005_append_function"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
