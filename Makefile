# Backstop: `make run` starts it on the embedded default, `make test` proves it.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# One stamp per lock: `make run` needs only the runtime lock, `make test` the development one.
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-runtime
OPERATOR ?= admin
PORT ?= 8000
# The test run talks to the real services (started by bin/ensure-services when stopped).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/backstop
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
PYTEST_WORKERS ?= 2
# Chaos scenarios run side by side, each with its own database, Redis db and processes.
CHAOS_JOBS ?= 3
# Every process reads compiled bytecode: without it each one compiles every module it
# imports (seconds of CPU for a worker's start), so the environment's "don't write it" is
# dropped here and the lock is installed compiled.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install install-runtime run changepassword test lint format lock bench chaos services clean

install: $(STAMP)

install-runtime: $(RUN_STAMP)

# uv installs a lock in seconds where pip takes minutes. A fresh machine gets uv into the venv
# first, at the version the development lock pins; pip does the work if that fails (offline
# index mirror without uv, an unsupported platform).
define install_lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check \
	  "$$(grep -m1 '^uv==' requirements-dev.lock)" || echo "uv unavailable: installing with pip"
	if test -x $(BIN)/uv && $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r $(1); \
	then :; else $(BIN)/python -m pip install --quiet --disable-pip-version-check -r $(1); fi
endef

$(STAMP): requirements-dev.lock
	$(call install_lock,requirements-dev.lock)
	@touch $(STAMP) $(RUN_STAMP)

$(RUN_STAMP): requirements.lock
	$(call install_lock,requirements.lock)
	@touch $(RUN_STAMP)

# DEBUG is off unless the environment turns it on: the local run and the tests turn it on.
# bin/run-procfile is honcho that stops cleanly: Ctrl-C ends it with status 0.
run: install-runtime
	DEBUG=1 $(BIN)/python manage.py migrate --noinput
	DEBUG=1 $(BIN)/python manage.py ensure_operator
	@echo "Backstop on http://127.0.0.1:$(PORT)/ (admin: /admin/, API docs: /api/docs/); Ctrl-C stops it."
	DEBUG=1 HOST=127.0.0.1 PORT=$(PORT) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bin/run-procfile Procfile

changepassword: install-runtime
	DEBUG=1 $(BIN)/python manage.py changepassword $(OPERATOR)

services:
	bin/ensure-services

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	DEBUG=1 $(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# tests/browser drive the admin in Debian's chromium: bin/ensure-browser installs it when missing.
# Then every chaos scenario at QUICK size, against the real processes (tests/chaos/README.md).
test: install lint
	RABBITMQ=1 bin/ensure-services
	bin/ensure-browser
	DEBUG=1 DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_REDIS_URL) \
	  PATH="$(CURDIR)/$(BIN):$$PATH" \
	  $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile
	CHAOS_RESULTS=var/chaos PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m tests.chaos --quick --jobs $(CHAOS_JOBS)

lock: install
	$(BIN)/uv pip compile pyproject.toml --no-emit-index-url --no-emit-find-links \
	  --python-version 3.11 -o requirements.lock -q
	$(BIN)/uv pip compile pyproject.toml --extra dev --no-emit-index-url --no-emit-find-links \
	  --python-version 3.11 -o requirements-dev.lock -q

clean:
	rm -rf var .pytest_cache .ruff_cache

bench: install services
	bin/ensure-bench-tools
	$(BIN)/python -m bench.run $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),)

# Fault injection against the real processes (tests/chaos/README.md); QUICK=1 is part of `make test`.
chaos: install
	RABBITMQ=1 bin/ensure-services
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m tests.chaos $(if $(QUICK),--quick,) --jobs $(CHAOS_JOBS)
