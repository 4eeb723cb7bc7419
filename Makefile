# Two commands: `make test` and `make demo`. Both set everything up from scratch; reruns skip finished work.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Test files run on this many processes (pytest-xdist; a file's tests stay on one process, sharing its fixtures).
TEST_WORKERS ?= 2

.PHONY: setup models test test-unit test-fast demo docs lint bench clean

setup: $(VENV)/.installed models

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the dependency ranges or the tested set change: every extra the tests use, pinned to the lock.
LOCK := requirements/lock.txt
EXTRAS := dev,docs,heic,synthetic,ray,eval,litert
$(VENV)/.installed: pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'
	touch $@

# Fetch, verify (sha256) and convert the offline models into $$DETECTCROP_HOME; a no-op once cached.
models: $(VENV)/.installed
	$(PY) -m detectcrop.zoo fetch --offline

# Every test has one tier (tests/conftest.py): unit (no model weights, fast), integration (the real models of the
# cache), slow (trains, int8, Ray, hostile multi-process runs, the wheel). `make test` runs all of them; `make
# test-unit` only the unit tier, `make test-fast` all but the slow one. The tests use a temporary copy of the model
# cache (links to the fetched models): they never write into $$DETECTCROP_HOME.
test: setup docs
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m unit $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(PY) -m pipelines.demo

bench: setup
	$(PY) -m bench.run_all

# The documentation site into site/ (git-ignored); a warning (a broken link, a docstring griffe cannot read) fails it.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir site

lint: $(VENV)/.installed
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
