"""A bad setting stops start-up with one error naming the variable, instead of passing
``manage.py check`` and failing every request later (the first-run issue: ``API_USER_RATE=lots``
answered every API request with a 500)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.api.throttles import parse_rate
from apps.resilience.taxonomy import ErrorKind
from config.env import (
    env_choice,
    env_choices,
    env_emails,
    env_float,
    env_int,
    env_rate,
    env_url,
    env_url_list,
)

ROOT = Path(__file__).resolve().parents[1]


def _check(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py check`` as an operator would, with this run's services and DEBUG on."""
    env = {**os.environ, "DEBUG": "1", "BACKSTOP_VAR_DIR": str(tmp_path / "var"), **variables}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


BAD_VALUES = [
    ("API_USER_RATE", "lots"),
    ("API_ANON_RATE", "5/fortnight"),
    ("API_LOGIN_ADDRESS_RATE", "0/min"),
    ("API_LOGIN_USERNAME_RATE", "10/month"),
    ("DEAD_LETTER_AUTO_RETRY_KINDS", "bogus"),
    ("ESCALATION_CHANNELS", "pager"),
    ("ESCALATION_WEBHOOK_URL", "ftp://hooks.example.com/"),
    ("LOG_LEVEL", "chatty"),
    ("OUTBOX_SWEEP_SECONDS", "-1"),
    ("OUTBOX_BATCH_SIZE", "0"),
    ("REMINDER_SWEEP_BATCH", "0"),
    ("REMINDER_SWEEP_SECONDS", "0"),
    ("HEARTBEAT_SECONDS", "nan"),
    ("BREAKER_FAILURE_THRESHOLD", "-3"),
    ("WEBHOOK_READ_TIMEOUT", "0"),
    ("SENTRY_TRACES_SAMPLE_RATE", "2"),
    ("EMAIL_PORT", "70000"),
    ("TRUSTED_PROXIES", "-1"),
    ("CELERY_BROKER_URL", "http://x"),
    ("REDIS_URL", "http://cache.internal:6379/0"),
    ("DATABASE_URL", "mysql://backstop@db.internal/backstop"),
    ("ADMIN_EMAILS", "not-an-email"),
    ("CSRF_TRUSTED_ORIGINS", "backstop.example.com"),
    ("SENTRY_DSN", "not a dsn"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[name for name, _ in BAD_VALUES])
def test_a_bad_value_stops_check_with_one_line_naming_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    result = _check(tmp_path, **{name: value})

    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith(f"ImproperlyConfigured: {name}")


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"ESCALATION_CHANNELS": "log,webhook"},
            "ESCALATION_CHANNELS lists webhook: set ESCALATION_WEBHOOK_URL",
        ),
        (
            {"CELERY_TASK_SOFT_TIME_LIMIT": "90", "CELERY_TASK_TIME_LIMIT": "90"},
            "CELERY_TASK_SOFT_TIME_LIMIT must be shorter than CELERY_TASK_TIME_LIMIT",
        ),
        (
            {"RESILIENCE_HANDLER_SOFT_TIME_LIMIT": "50"},
            "RESILIENCE_HANDLER_SOFT_TIME_LIMIT must be shorter than",
        ),
        (
            {"DEBUG": "0", "ALLOWED_HOSTS": ","},
            "ALLOWED_HOSTS must name at least one host when DEBUG is off",
        ),
        # The checks that were there before stay.
        (
            {"HEARTBEAT_SECONDS": "60", "HEARTBEAT_STALE_SECONDS": "30"},
            "HEARTBEAT_STALE_SECONDS must be longer than HEARTBEAT_SECONDS",
        ),
        (
            {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/9", "CELERY_VISIBILITY_TIMEOUT": "60"},
            "LEDGER_MAX_BROKER_COUNTDOWN must be shorter than CELERY_VISIBILITY_TIMEOUT",
        ),
        # Fault injection (the chaos suite) never runs without DEBUG.
        (
            {"DEBUG": "0", "EVENTSTORE_RELAY_CRASH_RATE": "0.05"},
            "EVENTSTORE_PUBLISH_COPIES and EVENTSTORE_RELAY_CRASH_RATE inject faults: DEBUG only",
        ),
    ],
    ids=[
        "webhook-without-url",
        "soft-limit",
        "handler-soft-limit",
        "no-hosts",
        "heartbeat",
        "ledger",
        "fault-injection",
    ],
)
def test_settings_that_disagree_stop_check(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    result = _check(tmp_path, **variables)

    assert result.returncode != 0
    assert message in result.stderr


def test_a_database_url_error_does_not_print_the_password(tmp_path: Path) -> None:
    result = _check(tmp_path, DATABASE_URL="mysql://backstop:hunter2@db.internal/backstop")

    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr
    assert "hunter2" not in result.stderr


def test_the_defaults_pass_check(tmp_path: Path) -> None:
    env_names = {name for name, _ in BAD_VALUES} - {
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
    }
    result = _check(tmp_path, **dict.fromkeys(env_names, ""))

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_good_values_pass_check(tmp_path: Path) -> None:
    result = _check(
        tmp_path,
        API_USER_RATE="100/hour",
        API_ANON_RATE="5/second",
        DEAD_LETTER_AUTO_RETRY_KINDS="transient, UNAVAILABLE",
        ESCALATION_CHANNELS="log,webhook",
        ESCALATION_WEBHOOK_URL="https://hooks.example.com/backstop",
        LOG_LEVEL="warning",
        OUTBOX_SWEEP_GRACE_SECONDS="0",
        RESILIENCE_DELAY_SCALE="0.01",
        ADMIN_EMAILS="ops@example.com, oncall@example.org",
        CSRF_TRUSTED_ORIGINS="https://backstop.example.com,https://*.example.org",
        EMAIL_PORT="587",
        SENTRY_TRACES_SAMPLE_RATE="0.25",
    )

    assert result.returncode == 0, result.stderr


def test_the_kinds_allowed_for_auto_retry_are_the_error_kinds() -> None:
    """DEAD_LETTER_AUTO_RETRY_KINDS is checked against RESILIENCE_SEVERITY's keys, which
    settings can name without importing the app: they must be ErrorKind's values."""
    assert sorted(settings.RESILIENCE_SEVERITY) == sorted(ErrorKind.values)


# --- The readers ------------------------------------------------------------------------


def _read(monkeypatch: pytest.MonkeyPatch, value: str, reader: Callable[[], object]) -> object:
    monkeypatch.setenv("X", value)
    return reader()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1200/min", (1200, 60)),
        ("100/hour", (100, 3_600)),
        ("5/s", (5, 1)),
        ("7/second", (7, 1)),
        ("2/days", (2, 86_400)),
        ("3/D", (3, 86_400)),
    ],
)
def test_env_rate_accepts_what_the_throttles_parse(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[int, int]
) -> None:
    rate = _read(monkeypatch, value, lambda: env_rate("X", "1/min"))

    parsed = parse_rate(str(rate))
    assert parsed is not None
    assert (parsed.limit, parsed.period) == expected


@pytest.mark.parametrize(
    "value", ["lots", "5/fortnight", "5/month", "5/ms", "0/min", "-1/min", "5", "/min", "1.5/s"]
)
def test_env_rate_refuses_anything_else(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"^X=.* is not a rate: write N/period"):
        _read(monkeypatch, value, lambda: env_rate("X", "1/min"))


def test_env_rate_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X", raising=False)
    assert env_rate("X", "60/min") == "60/min"


def test_env_int_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _read(monkeypatch, "1", lambda: env_int("X", 5, minimum=1)) == 1
    assert _read(monkeypatch, "65535", lambda: env_int("X", 5, maximum=65_535)) == 65_535
    with pytest.raises(ImproperlyConfigured, match=r"^X='0' must be at least 1$"):
        _read(monkeypatch, "0", lambda: env_int("X", 5, minimum=1))
    with pytest.raises(ImproperlyConfigured, match=r"^X='65536' must be at most 65535$"):
        _read(monkeypatch, "65536", lambda: env_int("X", 5, maximum=65_535))
    with pytest.raises(ImproperlyConfigured, match=r"^X='ten' is not an integer$"):
        _read(monkeypatch, "ten", lambda: env_int("X", 5))


def test_env_float_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _read(monkeypatch, "0", lambda: env_float("X", 1.0, minimum=0)) == 0.0
    assert _read(monkeypatch, "0.5", lambda: env_float("X", 1.0, above=0)) == 0.5
    with pytest.raises(ImproperlyConfigured, match=r"^X='0' must be greater than 0$"):
        _read(monkeypatch, "0", lambda: env_float("X", 1.0, above=0))
    with pytest.raises(ImproperlyConfigured, match=r"^X='-0.1' must be at least 0$"):
        _read(monkeypatch, "-0.1", lambda: env_float("X", 1.0, minimum=0))
    with pytest.raises(ImproperlyConfigured, match=r"^X='1.5' must be at most 1$"):
        _read(monkeypatch, "1.5", lambda: env_float("X", 1.0, maximum=1))
    for value in ["inf", "nan", "-inf"]:
        with pytest.raises(ImproperlyConfigured, match=r"is not a finite number$"):
            _read(monkeypatch, value, lambda: env_float("X", 1.0))


def test_env_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    levels = ["DEBUG", "INFO", "WARNING"]
    assert _read(monkeypatch, "warning", lambda: env_choice("X", "INFO", levels)) == "WARNING"
    with pytest.raises(ImproperlyConfigured, match=r"^X='chatty' is not one of: DEBUG, INFO"):
        _read(monkeypatch, "chatty", lambda: env_choice("X", "INFO", levels))


def test_env_choices_names_every_bad_item_and_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    allowed = ["log", "mail_admins", "sentry"]
    with pytest.raises(ImproperlyConfigured) as caught:
        _read(monkeypatch, "log,pager,sms", lambda: env_choices("X", [], allowed))

    assert str(caught.value) == (
        "X lists unknown value(s) 'pager', 'sms'; allowed: log, mail_admins, sentry"
    )


def test_env_choices_keeps_each_known_value_once(monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = ["log", "mail_admins", "sentry"]
    chosen = _read(monkeypatch, "Sentry, log,sentry", lambda: env_choices("X", [], allowed))

    assert chosen == ["sentry", "log"]


@pytest.mark.parametrize(
    ("value", "several"),
    [
        ("redis://:s3cret@cache.internal:6379/0", False),
        ("unix:///run/redis.sock", False),
        ("redis://primary:6379/0,redis://replica:6379/0", True),
        ("rediss://a:6379/0;rediss://b:6379/0", True),
    ],
)
def test_env_url_accepts_its_schemes(
    monkeypatch: pytest.MonkeyPatch, value: str, several: bool
) -> None:
    schemes = ["redis", "rediss", "unix"]
    assert _read(monkeypatch, value, lambda: env_url("X", "", schemes, several=several)) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://cache:6379", r"^X has http://; it must start with one of redis://, unix://$"),
        ("cache.internal", r"^X has no scheme; it must start with one of"),
        ("redis://cache:port/0", r"^X is not a valid URL \(use redis://, unix://\)$"),
        ("redis://a:6379,http://b:6379", r"^X has http://"),
    ],
)
def test_env_url_refuses_other_urls_without_repeating_them(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        _read(monkeypatch, value, lambda: env_url("X", "", ["redis", "unix"], several=True))


def test_env_url_needs_a_host_for_http(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"^X has no host name$"):
        _read(monkeypatch, "https:///path", lambda: env_url("X", "", ["http", "https"]))


def test_env_url_list_checks_every_url(monkeypatch: pytest.MonkeyPatch) -> None:
    schemes = ["http", "https"]
    with pytest.raises(ImproperlyConfigured, match=r"^X has no scheme"):
        _read(
            monkeypatch,
            "https://a.example.com,b.example.com",
            lambda: env_url_list("X", [], schemes),
        )


def test_env_emails(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _read(monkeypatch, "a@example.com, b@localhost", lambda: env_emails("X", [])) == [
        "a@example.com",
        "b@localhost",
    ]
    with pytest.raises(ImproperlyConfigured, match=r"^X lists 'nope', which is not an email"):
        _read(monkeypatch, "a@example.com,nope", lambda: env_emails("X", []))


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", {"confirm_publish": True}),
        ("redis://127.0.0.1:6379/9", {"visibility_timeout": 3600}),
    ],
    ids=["rabbitmq", "redis"],
)
def test_the_broker_transport_options_suit_the_broker(
    tmp_path: Path, url: str, options: dict[str, object]
) -> None:
    # RabbitMQ: publisher confirms, so a publish the broker did not take is an error the
    # relay sees (the chaos suite runs its scenarios on RabbitMQ with these settings).
    env = {**os.environ, "DEBUG": "1", "BACKSTOP_VAR_DIR": str(tmp_path), "CELERY_BROKER_URL": url}
    env.pop("CELERY_VISIBILITY_TIMEOUT", None)
    script = "from config.settings import stores; print(stores.CELERY_BROKER_TRANSPORT_OPTIONS)"
    found = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == repr(options)
