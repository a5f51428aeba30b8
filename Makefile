# Backstop: `make run` starts it on the embedded default, `make test` proves it.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
# The test run talks to the real services (started by bin/ensure-services when stopped).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/backstop
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
PYTEST_WORKERS ?= 2

.PHONY: install run test lint format lock bench services clean

install: $(STAMP)

$(STAMP): requirements-dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	@touch $(STAMP)

# DEBUG is off unless the environment turns it on: the local run and the tests turn it on.
run: install
	DEBUG=1 $(BIN)/python manage.py migrate --noinput
	DEBUG=1 $(BIN)/python manage.py ensure_operator
	@echo "Backstop on http://127.0.0.1:$(PORT)/ (admin: /admin/, API docs: /api/docs/); Ctrl-C stops it."
	DEBUG=1 HOST=127.0.0.1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile -p $(PORT)

services:
	bin/ensure-services

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install services lint
	DEBUG=1 DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) CELERY_BROKER_URL=$(TEST_REDIS_URL) \
	  PATH="$(CURDIR)/$(BIN):$$PATH" \
	  $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

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
