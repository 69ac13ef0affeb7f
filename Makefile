# The two commands a newcomer runs: `make demo` and `make test`. Everything else is for developers.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install system-deps kube-binaries demo test lint bench bench-rest e2e e2e-realos e2e-node e2e-join clean stack test-stack

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

# The real kube-apiserver, kube-controller-manager, kubeadm and kubelet of the test bed, built from
# the k8s.io/kubernetes Go module once per version and machine (minutes), then reused (milliseconds).
kube-binaries:
	@scripts/build-kube.sh >/dev/null
	@scripts/build-tctl.sh >/dev/null

# Two tests at a time (pytest-xdist; each worker has its own dev server and control plane): most
# of a test waits on servers, BMCs and timers, so two share the 2 cores of CI's machine well.
TEST_WORKERS ?= 2
test: install system-deps kube-binaries
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25  # the slowest tests, printed: the 15-minute budget is watched from them

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# as modules, like the demo: the test bed (testbed/) is importable from the checkout only
# issue 28's targets, one after the other (README "Performance"); the at-rest hold is its own target
bench: install system-deps kube-binaries  # prints figures; never part of make test
	$(PY) -m bench.image_write
	$(PY) -m bench.engine_floor --hosts 200 --runs 3 --stack
	$(PY) -m bench.fleet --hosts 100 --limit 20 --runs 3
	$(PY) -m bench.fleet --hosts 1000 --limit 50
	$(PY) -m bench.bridge --rate 50 --duration 60
	$(PY) -m bench.bridge --hosts 1000
	$(PY) -m bench.campaign --hosts 200 --wave 20

# Issue 28's scale at rest: 10,000 hosts adopted, then resting with their power read every 5 min,
# held 30 min (about 60 min with adoption); prints CPU, RSS, check lag and storage; not in `make bench`.
bench-rest: install system-deps
	$(PY) -m bench.at_rest --hosts 10000 --minutes 30 --interval 300 --power-sync batched --cache 3000 --start-rate 8

# The QEMU test bed (README: "metal3-dev-env on one laptop"); installs libvirt/QEMU on first use.
# Its kernel is kept in the build cache, ${METALFLOW_CACHE:-~/.cache/metalflow} (testbed/cache.py).
e2e: install system-deps kube-binaries
	scripts/e2e-deps.sh $(VENV)
	$(BIN)/pytest -q -rsP -m "e2e and not node" tests/e2e  # -P: the per-VM figures the e2e prints

# Only the real OS's part of `make e2e` (testbed/os_image.py's Debian image booted by BIOS, and
# deployed by metalflow to the multi-disk UEFI VM): the developer loop for issue 22's work.
e2e-realos: install system-deps kube-binaries
	scripts/e2e-deps.sh $(VENV)
	$(BIN)/pytest -q -rsP -m realos tests/e2e

# The node image (testbed/node_image.py: containerd, kubelet and kubeadm on the real OS) booted
# alone, its join prerequisites checked from inside (`make e2e` deploys it and joins instead).
e2e-node: install system-deps kube-binaries
	scripts/e2e-deps.sh $(VENV)
	$(BIN)/pytest -q -rsP -m node tests/e2e

# Only the join of `make e2e`: a VM metalflow provisions joins the test bed's control plane.
e2e-join: install system-deps kube-binaries
	scripts/e2e-deps.sh $(VENV)
	$(BIN)/pytest -q -rsP -m join tests/e2e

# The production-shaped engine (README: "Running in production"): temporal-server built from its Go
# module (scripts/build-temporal.sh, cached in ${METALFLOW_CACHE:-~/.cache/metalflow}) on Debian's
# PostgreSQL, two workers, the boot server. `make stack` runs it in the foreground.
stack: install system-deps
	scripts/build-temporal.sh >/dev/null
	$(PY) -m testbed.stack

test-stack: install system-deps
	scripts/build-temporal.sh >/dev/null
	$(BIN)/pytest -q -m stack tests/test_stack.py tests/test_stack_mtls.py

clean:
	rm -rf .metalflow
