"""Operations settings: logging, Sentry, heartbeats, events, resilience, reminders, email."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_choice,
    env_choices,
    env_emails,
    env_float,
    env_int,
    env_list,
    env_str,
    env_url,
)
from config.settings.core import DEBUG, VAR_DIR
from config.settings.stores import CELERY_BROKER_TRANSPORT_OPTIONS

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
# Projection followers: events applied per transaction, how long one task follows before
# it yields to the worker's other tasks, and how long a nudge waiting for its follower
# keeps further nudges from sending messages (a lost one delays the projection that long).
PROJECTION_BATCH_SIZE = env_int("PROJECTION_BATCH_SIZE", 500, minimum=1)
PROJECTION_FOLLOW_SECONDS = env_float("PROJECTION_FOLLOW_SECONDS", 2.0, above=0)
PROJECTION_NUDGE_TTL_SECONDS = env_int("PROJECTION_NUDGE_TTL_SECONDS", 10, minimum=1)

# --- Logging and errors -------------------------------------------------------------------
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
# Readable lines while developing, JSON lines for a log collector in production.
LOG_FORMAT = {"text": "plain", "json": "json"}[
    env_choice("LOG_FORMAT", "text" if DEBUG else "json", ["text", "json"])
]
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
        },
        # One JSON object a line, with the delivery's handler, event and correlation id.
        "json": {"()": "apps.console.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
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
# Fault injection for `make chaos` (scenario 6, duplicate delivery), never for production:
# the relay and the ledger's re-sends publish every deliver message this many times, to
# prove that a duplicated message has no second effect. 1 unless a chaos run sets it.
EVENTSTORE_PUBLISH_COPIES = env_int("EVENTSTORE_PUBLISH_COPIES", 1, minimum=1, maximum=3)
# Fault injection for `make chaos` (scenario 2, the relay's crash window), never for
# production: the share of relay batches after which the publishing process exits at once,
# having sent its messages and before marking the rows published. 0 unless a chaos run sets it.
EVENTSTORE_RELAY_CRASH_RATE = env_float("EVENTSTORE_RELAY_CRASH_RATE", 0.0, minimum=0, maximum=1)
if not DEBUG and (EVENTSTORE_PUBLISH_COPIES != 1 or EVENTSTORE_RELAY_CRASH_RATE):
    raise ImproperlyConfigured(
        "EVENTSTORE_PUBLISH_COPIES and EVENTSTORE_RELAY_CRASH_RATE inject faults: DEBUG only"
    )

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
# How long one group action of the ops API (retry or resolve a whole group) works before it
# answers with what is left for the next call: well inside the web server's 30 s timeout.
CONSOLE_GROUP_ACTION_SECONDS = env_float("CONSOLE_GROUP_ACTION_SECONDS", 10.0, above=0)
# How long a failure group may stay untriaged (or triaged but open) before the console flags it.
DEAD_LETTER_TRIAGE_TARGET_HOURS = env_float("DEAD_LETTER_TRIAGE_TARGET_HOURS", 24.0, above=0)
# Escalation: who hears about dead letters, and when (critical kinds: at once). Only the seed
# of the EscalationRule rows (apps.resilience.escalation_rules): edit the rules in the admin.
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
# How often beat looks for sagas past their deadline (apps.sagas.services.recover_overdue).
SAGA_SWEEP_SECONDS = env_float("SAGA_SWEEP_SECONDS", 30.0, above=0)
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

# --- Retention (apps.console.retention, run by beat and by ``manage.py prune``) ----------
# How often beat prunes, the rows one statement deletes, and the most one run deletes per
# table (the next run goes on where it stopped).
RETENTION_SWEEP_SECONDS = env_float("RETENTION_SWEEP_SECONDS", 3600.0, above=0)
RETENTION_BATCH_SIZE = env_int("RETENTION_BATCH_SIZE", 1000, minimum=1)
RETENTION_MAX_ROWS_PER_RUN = env_int("RETENTION_MAX_ROWS_PER_RUN", 100_000, minimum=1)
# Ages after which rows at an end are pruned: published outbox rows, processed marks,
# succeeded deliveries with their attempts, resolved or discarded dead letters with their
# actions. Expired idempotency keys (older than their 24 h window) go too.
OUTBOX_RETENTION_DAYS = env_float("OUTBOX_RETENTION_DAYS", 7.0, above=0)
PROCESSED_MARK_RETENTION_DAYS = env_float("PROCESSED_MARK_RETENTION_DAYS", 30.0, above=0)
DELIVERY_RETENTION_DAYS = env_float("DELIVERY_RETENTION_DAYS", 30.0, above=0)
DEAD_LETTER_RETENTION_DAYS = env_float("DEAD_LETTER_RETENTION_DAYS", 90.0, above=0)
# A processed mark is what makes a redelivered message a no-op: it must outlive the latest
# copy that can still arrive, the broker's re-delivery after its visibility timeout plus the
# ledger's longest re-send back-off (3600 s: apps.resilience.services.ledger's
# MAX_QUEUED_BACKOFF_SECONDS, which settings can't import; tests/console/test_retention.py
# holds the two equal).
LONGEST_REDELIVERY_SECONDS = (
    float(CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 0))  # type: ignore[arg-type]
    + 3600.0
)
if PROCESSED_MARK_RETENTION_DAYS * 86_400 <= LONGEST_REDELIVERY_SECONDS:
    raise ImproperlyConfigured(
        "PROCESSED_MARK_RETENTION_DAYS must be longer than CELERY_VISIBILITY_TIMEOUT plus the"
        f" ledger's longest back-off ({LONGEST_REDELIVERY_SECONDS:g} s): a message redelivered"
        " after its processed mark was pruned would take effect twice"
    )

# --- Metrics (GET /metrics, apps.console.metrics) -----------------------------------------
# With a token, a scraper sends "Authorization: Bearer <token>"; staff sessions always work.
METRICS_TOKEN = env_str("METRICS_TOKEN")
