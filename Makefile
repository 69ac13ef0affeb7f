# The two commands a newcomer runs: `make demo` and `make test`. Everything else is for developers.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install system-deps demo test lint bench e2e clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,testbed]'
	touch $@

install: $(VENV)/.installed

system-deps:
	@scripts/system-deps.sh

demo: install system-deps
	$(PY) -m testbed.demo

test: install system-deps
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# as modules, like the demo: the test bed (testbed/) is importable from the checkout only
bench: install system-deps  # prints figures; never part of make test
	$(PY) -m bench.image_write
	$(PY) -m bench.fleet --hosts 100 --limit 20
	$(PY) -m bench.bridge --hosts 1000

# The QEMU test bed (README: "metal3-dev-env on one laptop"); installs libvirt/QEMU on first use.
# Its kernel is kept in the build cache, ${METALFLOW_CACHE:-~/.cache/metalflow} (testbed/cache.py).
e2e: install system-deps
	scripts/e2e-deps.sh $(VENV)
	$(BIN)/pytest -q -rsP -m e2e tests/e2e  # -P: the per-VM figures the e2e prints

clean:
	rm -rf .metalflow
