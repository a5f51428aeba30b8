"""Storage settings: the database, the cache and Celery's broker and task behaviour."""

from __future__ import annotations

from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_float, env_int, env_str, env_url
from config.settings.core import VAR_DIR

# --- Database ---------------------------------------------------------------------------
# The schemes of the database backends Backstop runs on (dj_database_url knows more).
DATABASE_URL = env_url("DATABASE_URL", "", ["postgres", "postgresql", "pgsql", "sqlite"])
# Any: dj_database_url's typed dict has NAME as str; the SQLite default's NAME is a Path.
DATABASES: dict[str, Any]
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0),
            conn_health_checks=True,
        )
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "backstop.sqlite3",
            "OPTIONS": {
                # WAL lets the web, worker and beat processes read while one writes;
                # IMMEDIATE takes the write lock at BEGIN, so two writers queue instead of
                # failing with "database is locked" half-way through a transaction.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (breaker state, idempotency fast path, rate limits) ----------------------------
# Several URLs (comma-separated) are a primary and its replicas, as Django's cache reads them.
REDIS_URL = env_url("REDIS_URL", "", ["redis", "rediss", "unix"], several=True)
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "config.cache.RedisCache",  # Django's, one client per pool
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "backstop"),
            # A Redis that hangs must not hang requests: callers fail open or fall back.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": VAR_DIR / "cache",
        }
    }

# --- Celery -------------------------------------------------------------------------------
# Several URLs (semicolon-separated) are kombu's fail-over list.
CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL",
    # A host name, or kombu warns "No hostname was supplied" at every start.
    REDIS_URL or "filesystem://localhost//",
    ["redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp", "filesystem"],
    several=True,
)
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    _broker_dir.mkdir(exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        # The exchange tables too, or kombu writes them to ./control in the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # kombu polls a folder for messages; its default second between looks held the
        # embedded default to about two messages a second.
        "polling_interval": env_float("EMBEDDED_BROKER_POLL_SECONDS", 0.02, above=0),
    }
elif CELERY_BROKER_URL.split("://", 1)[0] in ("amqp", "amqps", "pyamqp"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # RabbitMQ: a publish returns once the broker has taken the message (publisher
        # confirms), so a message a restart would lose is an error the relay sees and
        # leaves its outbox row for the sweep. Celery's queues are durable and its messages
        # persistent by default. RabbitMQ redelivers an unacknowledged message when its
        # consumer's channel closes, or once it was held past the broker's consumer_timeout
        # (30 minutes by default): far beyond LEDGER_MAX_BROKER_COUNTDOWN.
        "confirm_publish": True,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis re-delivers an unacknowledged message after this long; it must exceed the
        # longest countdown a retry can ask for, or a deferred task runs twice.
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1),
    }
# Celery's Django fix-up would otherwise close every database connection around every task
# (a new connection per task); with this set it does so only every N tasks, and
# config.celery closes broken or expired ones (CONN_MAX_AGE, health checks) around each.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, minimum=0)
# Results are not used by Backstop's own code (state lives in PostgreSQL); keep none.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or None
# Acknowledge after the task ran, so a worker that dies mid-task leaves the message queued.
CELERY_TASK_ACKS_LATE = True
# ...and a worker process killed by a signal (OOM, segfault) re-queues instead of acking.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message per worker process at a time: a slow handler can't hoard a backlog.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# JSON only: a pickled message from the broker could execute code.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A hung task is interrupted (soft) and then killed (hard) instead of blocking a slot.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 60, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 90, minimum=1)
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        "CELERY_TASK_SOFT_TIME_LIMIT must be shorter than CELERY_TASK_TIME_LIMIT"
    )
# Publishing must fail fast when the broker is down: the outbox keeps the row for the sweep.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": env_int("CELERY_PUBLISH_MAX_RETRIES", 2, minimum=0),
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker that lost its broker tries again 1 s later, then 1 s longer each time, up to this
# (Celery's own back-off grows to 30 s between tries: a worker would find a broker back a
# minute into an outage up to 16 s later).
BROKER_RECONNECT_MAX_SECONDS = env_int("BROKER_RECONNECT_MAX_SECONDS", 3, minimum=1)
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 4.0, above=0)
# A lost broker connection must not leave tasks half-run with nobody to ack them.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "backstop.deliver": {"queue": "handlers"},
    "backstop.outbox.*": {"queue": "maintenance"},
    "backstop.dead_letters.*": {"queue": "maintenance"},
    "backstop.deliveries.*": {"queue": "maintenance"},
    "backstop.reminders.*": {"queue": "maintenance"},
    "backstop.sagas.*": {"queue": "maintenance"},
    "backstop.projections.*": {"queue": "maintenance"},
    "backstop.console.*": {"queue": "maintenance"},
}
# Poison messages (undecodable bodies, unknown tasks) become dead letters instead of vanishing.
CELERY_WORKER_CONSUMER = "apps.resilience.consumer:DeadLetteringConsumer"
# django-celery-beat's DatabaseScheduler, recording beat's heartbeat as it ticks.
CELERY_BEAT_SCHEDULER = "apps.console.beat:HeartbeatScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
