"""Backstop's settings: every value comes from the environment, read here and nowhere else.

With no service variables set Backstop runs on its *embedded default*: a SQLite file and
kombu's filesystem broker under ``var/``. With ``DATABASE_URL``, ``CELERY_BROKER_URL`` and
``REDIS_URL`` set it runs on PostgreSQL and Redis. Nothing here exists only in production.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_choice,
    env_choices,
    env_emails,
    env_float,
    env_int,
    env_list,
    env_rate,
    env_str,
    env_url,
    env_url_list,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("BACKSTOP_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _persisted_secret_key() -> str:
    """Return a random key kept in var/, so a single-host install needs no configuration.

    The key is written to a private (0600) file that is then linked into place, so of
    processes starting together (web, worker, beat, gunicorn's workers) the first one's key
    is every one's key, and no process ever reads a half-written file."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        fd, draft = tempfile.mkstemp(dir=VAR_DIR, prefix=".secret_key.")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(64))
            # FileExistsError: another process got there first, and its key is the one.
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            os.unlink(draft)
    return path.read_text().strip()


# --- Core -------------------------------------------------------------------------------
# Off unless the environment turns it on (`make run` and `make test` do): the debug page
# shows every setting, service passwords included, to whoever reaches the port.
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or _persisted_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
# Without DEBUG an empty list refuses every request (400) instead of refusing to start.
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must name at least one host when DEBUG is off")
CSRF_TRUSTED_ORIGINS = env_url_list("CSRF_TRUSTED_ORIGINS", [], ["http", "https"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "apps.eventstore",
    "apps.resilience",
    "apps.todos",
    "apps.reminders",
    "apps.notifications",
    "apps.console",
    "apps.accounts",  # after knox: replaces its token admin
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything that renders, so templates can read request.csp_nonce.
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out admin login into its 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

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
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
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
}
# Poison messages (undecodable bodies, unknown tasks) become dead letters instead of vanishing.
CELERY_WORKER_CONSUMER = "apps.resilience.consumer:DeadLetteringConsumer"
# django-celery-beat's DatabaseScheduler, recording beat's heartbeat as it ticks.
CELERY_BEAT_SCHEDULER = "apps.console.beat:HeartbeatScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Process heartbeats (apps.console: /health/, /ready/) ---------------------------------
# How often the worker and beat record that they are alive, and how old the freshest
# heartbeat of each may grow before /ready/ reports that process down (503).
HEARTBEAT_SECONDS = env_float("HEARTBEAT_SECONDS", 10.0, above=0)
HEARTBEAT_STALE_SECONDS = env_float("HEARTBEAT_STALE_SECONDS", 60.0, above=0)
if HEARTBEAT_STALE_SECONDS <= HEARTBEAT_SECONDS:
    raise ImproperlyConfigured("HEARTBEAT_STALE_SECONDS must be longer than HEARTBEAT_SECONDS")

# --- Event store and outbox timing knobs -------------------------------------------------
# Take a snapshot every N events of a stream, for aggregates that opt in.
EVENTSTORE_SNAPSHOT_EVERY = env_int("EVENTSTORE_SNAPSHOT_EVERY", 50, minimum=1)
# How many commands a conflict may re-run before giving up.
EVENTSTORE_CONFLICT_RETRIES = env_int("EVENTSTORE_CONFLICT_RETRIES", 5, minimum=1)
# Rows one relay pass claims at a time, and how often beat sweeps for rows left behind.
OUTBOX_BATCH_SIZE = env_int("OUTBOX_BATCH_SIZE", 500, minimum=1)
OUTBOX_SWEEP_SECONDS = env_float("OUTBOX_SWEEP_SECONDS", 5.0, above=0)
# An on-commit batch larger than this is published by a worker, not by the committing request.
OUTBOX_INLINE_MAX = env_int("OUTBOX_INLINE_MAX", 50, minimum=0)
# A row younger than this is left to the on-commit relay that is publishing it right now.
OUTBOX_SWEEP_GRACE_SECONDS = env_float("OUTBOX_SWEEP_GRACE_SECONDS", 2.0, minimum=0)

# --- API ----------------------------------------------------------------------------------
# Proxies in front of the web process that append to X-Forwarded-For: client addresses
# (throttles, login lockouts) are read that many hops back; 0 trusts only the connection.
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0, minimum=0)
REST_FRAMEWORK = {
    "NUM_PROXIES": TRUSTED_PROXIES,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",  # hashed keys with an expiry (REST_KNOX below)
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["apps.api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Escape non-ASCII as \uXXXX: an error message echoing a lone surrogate stays encodable.
    "UNICODE_JSON": False,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.api.errors.exception_handler",
    # Fixed windows counted atomically in the cache; with the cache down they let requests by.
    "DEFAULT_THROTTLE_CLASSES": [
        "apps.api.throttles.UserThrottle",
        "apps.api.throttles.AnonThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_rate("API_USER_RATE", "1200/min"),
        "anon": env_rate("API_ANON_RATE", "60/min"),
        # The token endpoint (apps.accounts.throttles): every attempt, per address and per
        # username asked for, so guessing passwords is slow however it is spread.
        "login_address": env_rate("API_LOGIN_ADDRESS_RATE", "30/min"),
        "login_username": env_rate("API_LOGIN_USERNAME_RATE", "10/min"),
    },
}
# The largest request body the API parses (a bulk of 1,000 todos fits).
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 12 * 1024 * 1024, minimum=1)
SPECTACULAR_SETTINGS = {
    "TITLE": "Backstop API",
    "DESCRIPTION": "An event-sourced to-do back end where no event is lost.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files are served from this install, not fetched from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents the error responses it can give, in the one error shape.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.api.schema.document_error_responses",
    ],
}

# --- Auth, i18n, static ---------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out admin login before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# API tokens (django-rest-knox): the database keeps a SHA-512 digest and the first 15
# characters of each key, never the key; clients send "Authorization: Token <key>".
API_TOKEN_TTL_HOURS = env_int("API_TOKEN_TTL_HOURS", 720, minimum=1)
REST_KNOX = {"TOKEN_TTL": timedelta(hours=API_TOKEN_TTL_HOURS), "AUTH_HEADER_PREFIX": "Token"}
# Admin login guessing (django-axes): AXES_FAILURE_LIMIT failures of one username from one
# address lock that pair out of the admin login (429) for the cool-off. Failures at the
# token endpoint count too, but it answers with its own throttles (429 with Retry-After),
# so axes locks the admin site only.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("AXES_COOLOFF_MINUTES", 15.0, above=0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_ONLY_ADMIN_SITE = True
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_IPWARE_PROXY_COUNT = TRUSTED_PROXIES or None
AXES_VERBOSE = False  # no start-up banner in every management command and worker
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# In DEBUG, serve static files straight from the apps so no collectstatic is needed.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

# --- Security (on whenever DEBUG is off; each can be relaxed behind a TLS proxy) --------
# Believed from whoever sends it: the TLS proxy in front must set it, overwriting the client's.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^ready/$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Every page may load scripts, styles and images from this origin only (no CDN); an inline
# <script> or <style> runs only with this response's nonce (Swagger UI's set-up script,
# templates/drf_spectacular/swagger_ui.html). DEBUG changes nothing here, except that
# Django's own 404 and 500 debug pages go without it.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        # Swagger UI's stylesheet draws its icons as data: URIs.
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440, minimum=1)

# --- Logging and errors -------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "delivery": {"()": "apps.resilience.log_context.DeliveryContextFilter"},
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
    },
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s%(delivery)s"
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["delivery"],
        },
        "mail_admins": {  # as Django's default: server errors mailed to ADMINS without DEBUG
            "level": "ERROR",
            "filters": ["require_debug_false"],
            "class": "django.utils.log.AdminEmailHandler",
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # Not Django's default console handler, which printed every 4xx and 5xx a second
        # time with DEBUG: django.request's one line per error reaches the root's handler.
        "django": {"handlers": ["mail_admins"], "level": "INFO"},
    },
}

SENTRY_DSN = env_url("SENTRY_DSN", "", ["http", "https"])
# Read with or without a DSN, so a bad value is an error before the day it is used.
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT", "production")
SENTRY_TRACES_SAMPLE_RATE = env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0, minimum=0, maximum=1)
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        environment=SENTRY_ENVIRONMENT,
        traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
        send_default_pii=False,
        # Sentry hears of final failures (dead letters) only, reported by the runtime with
        # the console's fingerprint; error log lines stay breadcrumbs, not extra events.
        integrations=[LoggingIntegration(event_level=None)],
    )

# Extra modules whose @handles subscriptions are loaded at start-up (plugins, test handlers).
EVENTSTORE_EXTRA_HANDLER_MODULES = env_list("EVENTSTORE_EXTRA_HANDLER_MODULES", [])
# Publish outbox rows straight after commit; the beat sweep catches whatever this misses.
OUTBOX_PUBLISH_ON_COMMIT = env_bool("OUTBOX_PUBLISH_ON_COMMIT", True)

# --- Resilience: retry policies, severities, breakers, dead letters ----------------------
# Default retry policy per error kind; a handler may override any of them in @handles(retry=).
_NO_RETRY = {"strategy": "none"}
RESILIENCE_RETRY_POLICIES: dict[str, dict[str, Any]] = {
    "transient": {"strategy": "exponential", "max_attempts": 5, "base_delay": 1, "max_delay": 60},
    "timeout": {"strategy": "linear", "max_attempts": 3, "base_delay": 5, "max_delay": 60},
    "rate_limited": {
        "strategy": "retry_after",
        "max_attempts": 10,
        "base_delay": 30,
        "max_delay": 900,
    },
    # Deferred until the breaker half-opens or the cooldown ends; attempts are not spent.
    "unavailable": {
        "strategy": "fixed",
        "base_delay": 5,
        "max_delay": 900,
        "spends_attempts": False,
    },
    "business_rule": _NO_RETRY,
    "validation": _NO_RETRY,
    "not_found": _NO_RETRY,
    "authorization": _NO_RETRY,
    "system": _NO_RETRY,
    "configuration": _NO_RETRY,
    "corruption": _NO_RETRY,
    "security": _NO_RETRY,
}
# Multiplies every policy delay (not a server's Retry-After): tests shrink it.
RESILIENCE_DELAY_SCALE = env_float("RESILIENCE_DELAY_SCALE", 1.0, minimum=0)
# Severity of a dead letter by kind.
RESILIENCE_SEVERITY = {
    "transient": "high",
    "timeout": "medium",
    "rate_limited": "medium",
    "unavailable": "medium",
    "business_rule": "low",
    "validation": "medium",
    "not_found": "low",
    "authorization": "medium",
    "system": "critical",
    "configuration": "critical",
    "corruption": "critical",
    "security": "critical",
}
# A message whose worker process died this many times is dead-lettered instead of redelivered.
RESILIENCE_WORKER_LOST_LIMIT = env_int("RESILIENCE_WORKER_LOST_LIMIT", 3, minimum=1)
# Default soft/hard time limits of a handler (a handler may set its own in @handles).
RESILIENCE_HANDLER_SOFT_TIME_LIMIT = env_int("RESILIENCE_HANDLER_SOFT_TIME_LIMIT", 30, minimum=1)
RESILIENCE_HANDLER_TIME_LIMIT = env_int("RESILIENCE_HANDLER_TIME_LIMIT", 45, minimum=1)
if RESILIENCE_HANDLER_SOFT_TIME_LIMIT >= RESILIENCE_HANDLER_TIME_LIMIT:
    raise ImproperlyConfigured(
        "RESILIENCE_HANDLER_SOFT_TIME_LIMIT must be shorter than RESILIENCE_HANDLER_TIME_LIMIT"
    )
# The delivery ledger: the database knows every (handler, event) pair still to deliver, and
# the reconciler re-sends the ones that made no progress (a message the broker lost).
# A queued pair no worker has started after this long is sent again (then backing off).
LEDGER_QUEUED_SECONDS = env_float("LEDGER_QUEUED_SECONDS", 60.0, above=0)
# Slack past a running pair's hard time limit, or a waiting pair's next attempt.
LEDGER_MARGIN_SECONDS = env_float("LEDGER_MARGIN_SECONDS", 30.0, minimum=0)
# A longer wait (a long Retry-After, a breaker's cool-off) is kept in the ledger, not in a
# broker countdown: Redis re-delivers what it holds longer than its visibility timeout.
LEDGER_MAX_BROKER_COUNTDOWN = env_float("LEDGER_MAX_BROKER_COUNTDOWN", 300.0, minimum=0)
# How often beat runs the reconciler, and the most pairs one run re-sends.
LEDGER_RECONCILE_SECONDS = env_float("LEDGER_RECONCILE_SECONDS", 10.0, above=0)
LEDGER_RECONCILE_BATCH = env_int("LEDGER_RECONCILE_BATCH", 500, minimum=1)
if (
    float(
        CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", float("inf"))  # type: ignore[arg-type]
    )
    <= LEDGER_MAX_BROKER_COUNTDOWN
):
    raise ImproperlyConfigured(
        "LEDGER_MAX_BROKER_COUNTDOWN must be shorter than CELERY_VISIBILITY_TIMEOUT"
    )
# How long the Redis fast path remembers that a handler processed an event.
RESILIENCE_PROCESSED_CACHE_SECONDS = env_int(
    "RESILIENCE_PROCESSED_CACHE_SECONDS", 86_400, minimum=1
)
# Circuit breaker defaults (a breaker may be given its own).
BREAKER_FAILURE_THRESHOLD = env_int("BREAKER_FAILURE_THRESHOLD", 5, minimum=1)
BREAKER_WINDOW_SECONDS = env_int("BREAKER_WINDOW_SECONDS", 60, minimum=1)
BREAKER_RESET_TIMEOUT = env_float("BREAKER_RESET_TIMEOUT", 30.0, above=0)
BREAKER_HALF_OPEN_MAX_CALLS = env_int("BREAKER_HALF_OPEN_MAX_CALLS", 1, minimum=1)
BREAKER_SUCCESS_THRESHOLD = env_int("BREAKER_SUCCESS_THRESHOLD", 2, minimum=1)
BREAKER_PROBE_LEASE_SECONDS = env_float("BREAKER_PROBE_LEASE_SECONDS", 30.0, above=0)
# Dead letters of these kinds are retried automatically after a delay, a bounded number of times.
# Every error kind has a severity (tests/test_settings_validation.py holds them to ErrorKind).
DEAD_LETTER_AUTO_RETRY_KINDS = env_choices(
    "DEAD_LETTER_AUTO_RETRY_KINDS",
    ["transient", "timeout", "rate_limited"],
    list(RESILIENCE_SEVERITY),
)
DEAD_LETTER_AUTO_RETRY_SECONDS = env_float("DEAD_LETTER_AUTO_RETRY_SECONDS", 3600.0, minimum=0)
DEAD_LETTER_AUTO_RETRY_LIMIT = env_int("DEAD_LETTER_AUTO_RETRY_LIMIT", 3, minimum=0)
DEAD_LETTER_SWEEP_SECONDS = env_float("DEAD_LETTER_SWEEP_SECONDS", 60.0, above=0)
# Escalation: who hears about dead letters, and when (critical kinds: at once).
ESCALATION_RULES: list[dict[str, Any]] = [
    {"name": "critical at once", "min_severity": "critical", "count": 1, "window_seconds": 3600},
    {"name": "high, repeated", "min_severity": "high", "count": 5, "window_seconds": 900},
    {"name": "anything, a flood", "min_severity": "low", "count": 50, "window_seconds": 300},
    # Any failure group nobody has heard of yet, then quiet for the cool-down.
    {
        "name": "a new failure group",
        "min_severity": "low",
        "count": 1,
        "window_seconds": env_int("ESCALATION_COOLDOWN_SECONDS", 3600, minimum=1),
    },
]
# The channels apps.resilience.services.escalation._send knows.
ESCALATION_CHANNELS = env_choices(
    "ESCALATION_CHANNELS",
    ["log", "mail_admins", "sentry"],
    ["log", "mail_admins", "sentry", "webhook"],
)
ESCALATION_WEBHOOK_URL = env_url("ESCALATION_WEBHOOK_URL", "", ["http", "https"])
if "webhook" in ESCALATION_CHANNELS and not ESCALATION_WEBHOOK_URL:
    raise ImproperlyConfigured("ESCALATION_CHANNELS lists webhook: set ESCALATION_WEBHOOK_URL")
ADMINS = [("Backstop operators", a) for a in env_emails("ADMIN_EMAILS", [])]
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

# --- Reminders and notifications ------------------------------------------------------------
# How often beat fires due reminders, and how many one transaction claims.
REMINDER_SWEEP_SECONDS = env_float("REMINDER_SWEEP_SECONDS", 10.0, above=0)
REMINDER_SWEEP_BATCH = env_int("REMINDER_SWEEP_BATCH", 200, minimum=1)
# Webhooks must be https and public; this allows http and private addresses (tests, local use).
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", DEBUG)
WEBHOOK_CONNECT_TIMEOUT = env_float("WEBHOOK_CONNECT_TIMEOUT", 3.0, above=0)
WEBHOOK_READ_TIMEOUT = env_float("WEBHOOK_READ_TIMEOUT", 5.0, above=0)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "backstop@localhost")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65_535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
