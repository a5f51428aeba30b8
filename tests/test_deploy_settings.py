"""Production is the default: an environment that says nothing about DEBUG gets none of it,
and production's environment passes Django's deployment checks."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

# The module that keeps the secret key (its VAR_DIR is the one the helper reads).
from config.settings import core as backstop_settings

ROOT = Path(__file__).resolve().parents[1]
SHOW_SETTINGS = """
import json
from django.conf import settings
print(json.dumps({name: getattr(settings, name) for name in [
    "DEBUG", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS", "WEBHOOK_ALLOW_PRIVATE", "WHITENOISE_USE_FINDERS",
]}))
"""


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Return a production process's environment: services and secrets, nothing about DEBUG
    or the HTTPS settings (so the defaults decide), whatever the test run itself was given."""
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "BACKSTOP_VAR_DIR": str(tmp_path / "var"),
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "backstop.example.com",
        # Nothing connects: settings and checks only read these.
        "DATABASE_URL": "postgres://backstop:s3cret@db.internal:5432/backstop",
        "REDIS_URL": "redis://:s3cret@cache.internal:6379/0",
        "CELERY_BROKER_URL": "redis://:s3cret@cache.internal:6379/1",
        **extra,
    }


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_with_nothing_said_debug_is_off_and_https_is_required(tmp_path: Path) -> None:
    env = _production_env(tmp_path)
    assert "DEBUG" not in env

    result = _run(env, "-c", f"import django; django.setup()\n{SHOW_SETTINGS}")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "DEBUG": False,
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "WEBHOOK_ALLOW_PRIVATE": False,
        "WHITENOISE_USE_FINDERS": False,
    }


def test_the_deploy_check_is_clean_with_production_settings(tmp_path: Path) -> None:
    result = _run(
        _production_env(tmp_path), "manage.py", "check", "--deploy", "--fail-level", "WARNING"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_deploy_check_is_clean_with_the_key_kept_in_var_dir(tmp_path: Path) -> None:
    env = _production_env(tmp_path)
    del env["SECRET_KEY"]

    result = _run(env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    key = tmp_path / "var" / "secret_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_processes_starting_together_share_the_first_ones_kept_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process writes its key right after this one found none: both must use it."""
    monkeypatch.setattr(backstop_settings, "VAR_DIR", tmp_path)
    ours = secrets.token_urlsafe

    def theirs_lands_first(nbytes: int) -> str:
        (tmp_path / "secret_key").write_text("the-first-process-key")
        return ours(nbytes)

    monkeypatch.setattr(backstop_settings.secrets, "token_urlsafe", theirs_lands_first)

    assert backstop_settings._persisted_secret_key() == "the-first-process-key"
    assert (tmp_path / "secret_key").read_text() == "the-first-process-key"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["secret_key"]
