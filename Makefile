# Fresh-machine entry points (see README). Python 3.11 is required (torch 2.13.0 CPU wheel, mediapipe 0.10.21).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test test-fast test-mlrun install-app install-test bench lint format

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The app needs no torch: inference runs on ONNX Runtime.
$(VENV)/.app-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.app-installed

install-app: $(VENV)/.app-installed
install-test: $(VENV)/.test-installed

run: install-app
	$(BIN)/deepshield serve --host $(HOST) --port $(PORT)

test: install-test
	bash .ci/setup-system.sh
	$(BIN)/python -m pytest -p no:cacheprovider

# The quick loop while editing: no root, no browser, no Ray, no training runs (about two minutes here).
test-fast: install-test
	$(BIN)/python -m pytest -p no:cacheprovider -m "not slow and not browser and not ray"

# ruff's checks and mypy (strict on media, faces, inference, models, synthesis): configured in pyproject.toml.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/ruff format --check .

# Rewrites files: ruff's formatter, then ruff's safe fixes.
format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The MLRun integration through real MLRun (local mode), in its own venv: the mlrun extra moves
# pandas (3.x -> 2.1) and pyarrow, so it stays out of the test venv (see docs/mlrun.md).
MLRUN_VENV ?= .venv-mlrun
$(MLRUN_VENV)/.mlrun-installed: pyproject.toml
	$(PYTHON) -m venv $(MLRUN_VENV)
	$(MLRUN_VENV)/bin/pip install -q -e '.[test,mlrun]'
	touch $@

test-mlrun: $(MLRUN_VENV)/.mlrun-installed
	$(MLRUN_VENV)/bin/python -m pytest -p no:cacheprovider tests/test_tuning_mlrun.py

bench: install-test
	$(BIN)/python bench/bench_latency.py
	$(BIN)/python bench/bench_serving.py
