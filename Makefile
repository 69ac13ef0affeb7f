# The two commands a newcomer runs: `make demo` and `make test`. Everything else is for developers.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install system-deps demo test lint bench e2e clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

system-deps:
	@scripts/system-deps.sh

demo: install system-deps
	$(BIN)/metalflow demo

test: install system-deps
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install system-deps
	$(PY) bench/image_write.py

e2e: install system-deps
	$(BIN)/pytest -q -m e2e tests/e2e

clean:
	rm -rf .metalflow
