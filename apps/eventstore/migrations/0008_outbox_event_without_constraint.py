"""The outbox row's event is no longer checked by a foreign key constraint.

``eventstore_append`` writes an event and its outbox row in one statement, and events are
never deleted nor updated (migration 0002's triggers), so the key could not fail; checking
it at commit locked each event row ``FOR KEY SHARE``, a write to the row, and cost half of
what writing the outbox row does. The unique index on ``event_id`` stays.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("eventstore", "0007_concurrent_appends")]

    operations = [
        migrations.AlterField(
            model_name="outboxmessage",
            name="event",
            field=models.OneToOneField(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="outbox",
                to="eventstore.event",
            ),
        ),
    ]
