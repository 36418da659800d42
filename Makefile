# `make train` and `make test` install the virtual environment first when it is missing.
# The environment is requirements.lock, every package pinned with its hashes; `make lock` regenerates it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock

.PHONY: install lock train test test-all lint format clean
install: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

lock:                 ## requirements.lock from pyproject.toml; ARGS=--upgrade: the newest releases its ranges allow
	test -x $(VENV)/bin/uv || { test -x $(PY) || $(PYTHON) -m venv $(VENV); $(PY) -m pip install --quiet uv; }
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --group tools \
		--universal --generate-hashes --custom-compile-command "make lock" --quiet -o $(LOCK) $(ARGS)

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
