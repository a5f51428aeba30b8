"""API settings: REST framework, the schema, auth (knox, axes), i18n, static and security."""

from __future__ import annotations

from datetime import timedelta

from csp.constants import NONCE, NONE, SELF

from config.env import env_bool, env_float, env_int, env_rate
from config.settings.core import DEBUG, VAR_DIR

# --- API ----------------------------------------------------------------------------------
# Proxies in front of the web process that append to X-Forwarded-For: client addresses
# (throttles, login lockouts) are read that many hops back; 0 trusts only the connection.
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0, minimum=0)
REST_FRAMEWORK = {
    "NUM_PROXIES": TRUSTED_PROXIES,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.CachedTokenAuthentication",  # knox: REST_KNOX below
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
    # Fields named alike with different choices get names of their own in the schema.
    "ENUM_NAME_OVERRIDES": {
        "DeadLetterStatusEnum": "apps.resilience.models.DeadLetter.Status",
    },
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
# How long a process remembers a token that checked out (apps.accounts.authentication):
# a token revoked elsewhere works in another process for at most this long; 0: no cache.
API_TOKEN_CACHE_SECONDS = env_int("API_TOKEN_CACHE_SECONDS", 5, minimum=0)
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
