"""Refuse UPDATE and DELETE of events in the database itself, whatever the client."""

from __future__ import annotations

from django.db import migrations

POSTGRES_CREATE = """
CREATE OR REPLACE FUNCTION eventstore_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'eventstore_event is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER eventstore_event_append_only
    BEFORE UPDATE OR DELETE ON eventstore_event
    FOR EACH ROW EXECUTE FUNCTION eventstore_refuse_change();
"""
POSTGRES_DROP = """
DROP TRIGGER IF EXISTS eventstore_event_append_only ON eventstore_event;
DROP FUNCTION IF EXISTS eventstore_refuse_change();
"""
SQLITE_CREATE = [
    """CREATE TRIGGER eventstore_event_no_update BEFORE UPDATE ON eventstore_event
       BEGIN SELECT RAISE(ABORT, 'eventstore_event is append-only: UPDATE refused'); END;""",
    """CREATE TRIGGER eventstore_event_no_delete BEFORE DELETE ON eventstore_event
       BEGIN SELECT RAISE(ABORT, 'eventstore_event is append-only: DELETE refused'); END;""",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS eventstore_event_no_update;",
    "DROP TRIGGER IF EXISTS eventstore_event_no_delete;",
]


def _run(statements: dict[str, list[str]]):
    def run(apps, schema_editor) -> None:
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("eventstore", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": [POSTGRES_CREATE], "sqlite": SQLITE_CREATE}),
            _run({"postgresql": [POSTGRES_DROP], "sqlite": SQLITE_DROP}),
        ),
    ]
