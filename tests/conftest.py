"""Every test can use the fixtures of tests/fixtures/, one module per real component (see its
__init__ for how to add one): one Temporal dev server for the whole session, emulated BMCs, the
real Kubernetes control plane (one per session), a loopback web server, the VM test bed."""

import os

pytest_plugins = [
    "fixtures.temporal",
    "fixtures.kubeapi",
    "fixtures.sushy",
    "fixtures.ipmi",
    "fixtures.www",
    "fixtures.registry",
    "fixtures.vm",
    "fixtures.stack",  # temporal-server on PostgreSQL, the workers (make test-stack)
    "fixtures.datacenter",  # emulated hosts and an in-process worker (`dc`)
    "fixtures.crash",  # a dev server and a worker process a test may kill -9
    "fixtures.ci",  # under CI=true a skipped test fails, naming what was missing
]

# The emulated fleets' BMCs apply a power change 1-2 s after it is asked for instead of
# sushy-emulator's 1-11 s (testbed/sushy.py); fixtures/sushy.py keeps the emulator's own.
os.environ.setdefault("METALFLOW_TESTBED_POWER_DELAY", "1-2")
