# `make train` and `make test` install the virtual environment first when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-all lint format clean
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# hydra-optuna-sweeper 1.3.0 (the newest) declares optuna<3, whose SQLite storage fails with
	# SQLAlchemy 2; it runs with optuna 4-5 (pyproject), so it is installed without its pins
	$(PY) -m pip install --quiet --no-deps "hydra-optuna-sweeper==1.3.0"
	touch $(STAMP)

train: install        ## the default job; extra Hydra arguments: make train ARGS="model.loss=hinge"
	$(PY) train.py $(ARGS)

test: install         ## the default suite: CPU, offline, a few minutes
	$(PY) -m pytest -q $(ARGS)

test-all: install     ## also the slow tests
	$(PY) -m pytest -q -m "not gpu" $(ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:
	rm -rf logs .pytest_cache
