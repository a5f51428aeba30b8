"""Appends run side by side; readers wait for the ones in flight instead.

``eventstore_append`` now takes the append lock *shared*: appends no longer queue on each
other through their commits (their WAL flushes can be shared); only appends to the same
stream wait for each other, on a lock of that stream (class 1651733611, 'bstk').
``read_all`` stays gap-free through ``eventstore_committed_position(lock_key)``: it takes
the same lock *exclusively* for one statement (it waits for the appends in flight to end,
and holds new ones back meanwhile), reads the highest committed position and releases the
lock. Every position at or below it that will ever commit has committed; the reader reads
no further. A rebuild's switch still takes the lock exclusively for its whole transaction
(``take_append_lock``)."""

from __future__ import annotations

import importlib

from django.db import migrations

previous = importlib.import_module("apps.eventstore.migrations.0005_append_function")

# Appends to one stream still wait for each other: the second then finds the first's
# version and fails with VERSION_MISMATCH naming it, not with a bare unique violation.
# Streams are locked in one order (by id), so two appends never wait for each other both.
STREAM_LOCKS = """PERFORM pg_advisory_xact_lock_shared(p_lock_key);
        PERFORM pg_advisory_xact_lock(1651733611, hashtext(s.stream_id::text))
           FROM (SELECT DISTINCT x.stream_id
                   FROM jsonb_to_recordset(p_streams) AS x(stream_id uuid)
                  ORDER BY x.stream_id) s;"""
SHARED_APPEND = previous.POSTGRES_CREATE.replace(
    "PERFORM pg_advisory_xact_lock(p_lock_key);", STREAM_LOCKS
).replace(
    "recorded := clock_timestamp();  -- after the lock: recorded_at rises with position",
    "recorded := clock_timestamp();",
)
assert SHARED_APPEND != previous.POSTGRES_CREATE

COMMITTED_POSITION = """
CREATE OR REPLACE FUNCTION eventstore_committed_position(p_lock_key bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
BEGIN
    IF p_lock_key IS NULL THEN
        SELECT max(e.position) INTO last FROM eventstore_event e;
        RETURN coalesce(last, 0);
    END IF;
    -- A session-level lock, released below whatever happens: the caller's transaction
    -- may go on for long, and appends must not wait for it.
    PERFORM pg_advisory_lock(p_lock_key);
    BEGIN
        SELECT max(e.position) INTO last FROM eventstore_event e;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock(p_lock_key);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(p_lock_key);
    RETURN coalesce(last, 0);
END;
$$;
"""
DROP_COMMITTED_POSITION = "DROP FUNCTION IF EXISTS eventstore_committed_position(bigint);"


class Migration(migrations.Migration):
    dependencies = [("eventstore", "0006_event_correlation_index")]

    operations = [
        migrations.RunPython(
            previous._postgres_only(SHARED_APPEND + COMMITTED_POSITION),
            previous._postgres_only(previous.POSTGRES_CREATE + DROP_COMMITTED_POSITION),
        ),
    ]
