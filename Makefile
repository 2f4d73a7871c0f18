# Set-up and everyday commands. `make run` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: venv run test lint bench schema base-image wheelhouse prometheus-debs up down clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

## The main job on the embedded default broker: worker, demo transform + chain, results printed.
run: venv
	$(VENV)/bin/mediaconduit demo

## The test suite (real Redis, real workers; Docker tests skip without an engine unless in CI).
test: venv
	$(PY) -m pytest -q --durations=25 tests

## Lint: ruff (rules and import order) and mypy on the package.
lint: venv
	$(VENV)/bin/ruff check mediaconduit_worker tests bench providers services
	$(VENV)/bin/mypy

## Benchmarks against raw Celery in the same run.
bench: venv
	$(PY) bench/bench_spine.py
	$(PY) bench/bench_services.py
	$(PY) bench/bench_batch.py
	$(PY) bench/bench_remote.py
	$(PY) bench/bench_media.py
	$(PY) bench/bench_media_bombs.py
	$(PY) bench/bench_validate.py
	$(PY) bench/bench_redaction.py
	$(PY) bench/bench_routing.py
	$(PY) bench/bench_instructions.py
	$(PY) bench/bench_steps.py
	$(PY) bench/bench_gateway.py
	$(PY) bench/bench_webhooks.py
	$(PY) bench/bench_c2pa.py

## docs/record.schema.json, generated from the record's pydantic model (a test holds the two equal).
schema: venv
	$(PY) -c 'import json; from mediaconduit_worker.record import record_schema; print(json.dumps(record_schema(), indent=2))' > docs/record.schema.json

## Offline base image for the reference services (no registry needed).
base-image:
	bash scripts/base-image.sh

## The compose/ stack: Redis + worker pools + Flower + gateway + Prometheus, images built here (offline after
## base-image and prometheus-debs).
COMPOSE := docker-compose -p mediaconduit --env-file compose/.env -f compose/docker-compose.yml

compose/.env:
	@umask 077; printf 'MEDIACONDUIT_REDIS_PASSWORD=%s\nMEDIACONDUIT_FLOWER_AUTH=admin:%s\nMEDIACONDUIT_INSTALLATION_SECRET=%s\n' \
	  "$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(16))')" \
	  "$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(12))')" \
	  "$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(32))')" > $@
	@echo "wrote $@ (Redis password, Flower admin password and installation secret)"

# async-timeout: redis needs it on the image's Python 3.11.2 (< 3.11.3), which the host may not.
wheelhouse: venv
	$(PY) -m pip wheel --disable-pip-version-check -q --wheel-dir compose/wheelhouse . pip async-timeout

# Debian's prometheus and what it needs beyond the base image, for compose/Dockerfile.prometheus.
prometheus-debs: base-image
	bash scripts/prometheus-debs.sh

up: base-image wheelhouse prometheus-debs compose/.env
	mkdir -p compose/data/blobs
	$(COMPOSE) up -d --build
	@echo "The stack is up. From this folder, this runs a job on it (echo-provider, served by the stack's git service):"
	@bash scripts/stack-command.sh compose/.env
	@echo "For batch --files, blobs put/get and get -o, this points the CLI at the blob folder the stack's workers use:"
	@echo "export MEDIACONDUIT_BLOB_DIR=$(CURDIR)/compose/data/blobs"
	@bash scripts/stack-urls.sh compose/.env

down:
	-docker ps -aq --filter label=org.mediaconduit.managed=1 --filter network=mediaconduit | xargs -r docker rm -f
	$(COMPOSE) down -v --remove-orphans

clean:
	rm -rf $(VENV) .pytest_cache
