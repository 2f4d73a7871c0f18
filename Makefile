# Set-up and everyday commands. `make run` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: venv run test bench base-image clean

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
	$(PY) -m pytest -q tests

## Benchmarks against raw Celery in the same run.
bench: venv
	$(PY) bench/bench_spine.py

## Offline base image for the reference services (no registry needed).
base-image:
	bash scripts/base-image.sh

clean:
	rm -rf $(VENV) .pytest_cache
