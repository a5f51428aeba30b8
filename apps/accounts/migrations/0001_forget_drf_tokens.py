"""Delete the keys of DRF's retired token table, which kept them in clear.

``rest_framework.authtoken`` is no longer installed, so nothing reads the table, but a
database that had it still holds every key: a backup, a replica or a SQL console could
show them. The table is left (its migrations are recorded), empty.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

OLD_TABLE = "authtoken_token"


def forget_drf_tokens(apps: Any, schema_editor: Any) -> None:
    """Delete every row of ``authtoken_token`` when this database has the table."""
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {schema_editor.quote_name(OLD_TABLE)}")


class Migration(migrations.Migration):
    dependencies: list[tuple[str, str]] = []

    operations = [migrations.RunPython(forget_drf_tokens, migrations.RunPython.noop)]
