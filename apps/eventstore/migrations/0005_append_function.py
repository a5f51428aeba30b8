"""One round trip per append on PostgreSQL: lock, version check and both inserts in SQL.

``eventstore_append(streams, events, lock_key)`` takes the append lock (unless ``lock_key``
is NULL), compares every stream's current version with the expected one, inserts the
events in the given order and one outbox row each, and returns ``(event_id, position,
outbox_id)`` per event. A version mismatch raises SQLSTATE ``BSV01`` with the stream, the
expected and the actual version in the detail, as JSON. SQLite keeps the ORM path.
"""

from __future__ import annotations

from django.db import migrations

POSTGRES_CREATE = """
CREATE OR REPLACE FUNCTION eventstore_append(p_streams jsonb, p_events jsonb, p_lock_key bigint)
RETURNS TABLE (event_id uuid, event_position bigint, outbox_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    mismatch record;
    recorded timestamptz;
BEGIN
    IF p_lock_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(p_lock_key);
    END IF;
    recorded := clock_timestamp();  -- after the lock: recorded_at rises with position
    SELECT s.stream_id, s.expected, coalesce(current.version, 0) AS actual INTO mismatch
      FROM jsonb_to_recordset(p_streams) AS s(stream_id uuid, expected integer)
      LEFT JOIN LATERAL (
          SELECT e.version FROM eventstore_event e
           WHERE e.stream_id = s.stream_id ORDER BY e.version DESC LIMIT 1
      ) current ON true
     WHERE coalesce(current.version, 0) <> s.expected
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'stream % is at version %, not %',
                mismatch.stream_id, mismatch.actual, mismatch.expected
            USING ERRCODE = 'BSV01',
                  DETAIL = json_build_object('stream_id', mismatch.stream_id,
                                             'expected', mismatch.expected,
                                             'actual', mismatch.actual)::text;
    END IF;
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO eventstore_event (event_id, stream_type, stream_id, version, type,
                                      schema_version, data, metadata, recorded_at)
        SELECT x.event_id, x.stream_type, x.stream_id, x.version, x.type,
               x.schema_version, x.data, x.metadata, recorded
          FROM ROWS FROM (jsonb_to_recordset(p_events)
                   AS (event_id uuid, stream_type varchar, stream_id uuid, version integer,
                       type varchar, schema_version smallint, data jsonb, metadata jsonb))
               WITH ORDINALITY AS x(event_id, stream_type, stream_id, version, type,
                                    schema_version, data, metadata, n)
         ORDER BY x.n
        RETURNING eventstore_event.position, eventstore_event.event_id
    ), outbox AS (
        INSERT INTO eventstore_outboxmessage (event_id, created_at, attempts, last_error)
        SELECT i.position, recorded, 0, '' FROM inserted i ORDER BY i.position
        RETURNING eventstore_outboxmessage.id, eventstore_outboxmessage.event_id
    )
    SELECT i.event_id, i.position, o.id
      FROM inserted i JOIN outbox o ON o.event_id = i.position
     ORDER BY i.position;
END;
$$;
"""
POSTGRES_DROP = "DROP FUNCTION IF EXISTS eventstore_append(jsonb, jsonb, bigint);"


def _postgres_only(sql: str):
    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("eventstore", "0004_projectionstate")]

    operations = [
        migrations.RunPython(_postgres_only(POSTGRES_CREATE), _postgres_only(POSTGRES_DROP)),
    ]
