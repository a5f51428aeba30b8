"""What `make run` installs and runs, and what Docker Compose starts: read from the Makefile
(by make's dry run) and the compose file, since neither can run inside the suite."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yaml"


def _dry_run(*targets: str) -> str:
    """Return the commands make would run for ``targets``, every prerequisite remade."""
    result = subprocess.run(
        ["make", "--dry-run", "--always-make", *targets],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_run_installs_the_runtime_lock_only_with_uv_and_its_own_stamp() -> None:
    commands = _dry_run("run")

    # Compiled at install: every process reads bytecode instead of compiling its imports.
    assert (
        "uv pip install --quiet --compile-bytecode --python .venv/bin/python -r requirements.lock"
        in commands
    )
    assert "-r requirements-dev.lock" not in commands
    assert "touch .venv/.installed-runtime" in commands
    assert "touch .venv/.installed " not in commands
    # uv comes at the development lock's pin; pip does the work when uv cannot be had.
    assert "--disable-pip-version-check \"$(grep -m1 '^uv==' requirements-dev.lock)\"" in commands
    assert (
        "python -m pip install --quiet --disable-pip-version-check -r requirements.lock" in commands
    )
    assert "python bin/run-procfile Procfile" in commands


def test_make_test_installs_the_development_lock() -> None:
    commands = _dry_run("install")

    assert "-r requirements-dev.lock" in commands
    assert "touch .venv/.installed .venv/.installed-runtime" in commands


def test_make_changepassword_runs_the_venvs_python_with_debug() -> None:
    commands = _dry_run("changepassword")

    assert "DEBUG=1 .venv/bin/python manage.py changepassword admin" in commands


def test_compose_creates_the_operator_before_the_processes_start() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]

    [script] = services["migrate"]["command"][2:]
    assert script == "python manage.py migrate --noinput && python manage.py ensure_operator"
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_compose_serves_the_console_over_plain_http_on_localhost() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]

    for name in ("migrate", "web", "worker", "beat"):
        environment = services[name]["environment"]
        assert environment["DEBUG"] == "0"
        for variable in (
            "SECURE_SSL_REDIRECT",
            "SESSION_COOKIE_SECURE",
            "CSRF_COOKIE_SECURE",
            "SECURE_HSTS_SECONDS",
        ):
            assert environment[variable] == f"${{{variable}:-0}}", (name, variable)
    assert "Production behind TLS removes these" in COMPOSE.read_text()


def test_gunicorn_is_sized_by_web_concurrency() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()

    assert services["web"]["environment"]["WEB_CONCURRENCY"] == "${WEB_CONCURRENCY:-2}"
    assert "ENV WEB_CONCURRENCY=2" in dockerfile
    assert "--workers" not in dockerfile  # gunicorn reads WEB_CONCURRENCY when not given
