"""Backstop's settings: every value comes from the environment, read here and nowhere else.

With no service variables set Backstop runs on its *embedded default*: a SQLite file and
kombu's filesystem broker under ``var/``. With ``DATABASE_URL``, ``CELERY_BROKER_URL`` and
``REDIS_URL`` set it runs on PostgreSQL and Redis. Nothing here exists only in production.
"""

# Each concern module reads its own variables and imports what it needs from the ones
# before it; the order below is the order the settings (and their checks) load in.
# isort: off
from config.settings.core import *  # noqa: F403
from config.settings.stores import *  # noqa: F403
from config.settings.api import *  # noqa: F403
from config.settings.operations import *  # noqa: F403
# isort: on
