"""Inserting many new rows at once, as fast as the database allows.

A rebuild writes a whole generation of a read model; Django's ``bulk_create`` spends more
time preparing each field than PostgreSQL spends storing the row. On PostgreSQL,
``insert_rows`` streams the rows with ``COPY`` (psycopg adapts the Python values);
elsewhere it is ``bulk_create``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from operator import attrgetter
from typing import cast

from django.db import connection, models
from psycopg import sql


def insert_rows(model: type[models.Model], objects: Iterable[object]) -> int:
    """Insert ``objects`` (new, unsaved instances of ``model``, or any objects with an
    attribute per column); return how many.

    Unlike ``bulk_create``, primary keys are not set on the instances afterwards, and no
    ``pre_save`` runs (so no ``auto_now`` fields: set every value on the instance).
    """
    objects = list(objects)
    if not objects:
        return 0
    if connection.vendor != "postgresql":
        names = [f.attname for f in model._meta.concrete_fields]
        instances = [
            o if isinstance(o, model) else model(**{n: getattr(o, n) for n in names})
            for o in objects
        ]
        model._default_manager.bulk_create(instances, batch_size=1000)
        return len(objects)
    fields = [f for f in model._meta.concrete_fields if not (f.primary_key and f.db_returning)]
    # A concrete field always has a column (the stubs' ``str | None`` covers the others).
    columns = [sql.Identifier(cast(str, f.column)) for f in fields]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(model._meta.db_table),
        sql.SQL(", ").join(columns),
    )
    # One call reads a row's values (a tuple), in C: a getter per column cost more.
    names = [f.attname for f in fields]
    values_of = attrgetter(*names) if len(names) > 1 else lambda o: (getattr(o, names[0]),)
    # One encoder per JSON column for the whole batch (json.dumps(cls=...) builds one a call).
    encoders = [
        (n, json.JSONEncoder() if f.encoder is None else f.encoder())
        for n, f in enumerate(fields)
        if isinstance(f, models.JSONField)
    ]
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.copy(statement) as copy,
    ):
        write = copy.write_row
        for obj in objects:
            if not encoders:
                write(values_of(obj))
                continue
            row = list(values_of(obj))
            for n, encoder in encoders:
                if (value := row[n]) == []:  # most todos' tags: no encoder needed
                    row[n] = "[]"
                elif value is not None:
                    row[n] = encoder.encode(value)
            write(row)
    return len(objects)
