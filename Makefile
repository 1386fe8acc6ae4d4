# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create .venv from pyproject.toml (and install Debian packages listed in
# scripts/debian-packages.txt when they are missing), then run.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

.PHONY: install system-deps demo test lint typecheck bench

system-deps:
	@bash scripts/install-debian-packages

$(VENV)/.installed: pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: system-deps $(VENV)/.installed

demo: install
	$(VENV)/bin/studyman demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check studyman tests benchmarks
	$(VENV)/bin/ruff format --check studyman tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

bench: install
	$(PY) -m benchmarks
