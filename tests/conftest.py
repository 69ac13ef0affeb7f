"""Every test can use the fixtures of tests/fixtures/, one module per real component (see its
__init__ for how to add one): one Temporal dev server for the whole session, emulated BMCs, the
real Kubernetes control plane (one per session), a loopback web server, the VM test bed."""

pytest_plugins = [
    "fixtures.temporal",
    "fixtures.kubeapi",
    "fixtures.sushy",
    "fixtures.ipmi",
    "fixtures.www",
    "fixtures.registry",
    "fixtures.vm",
    "fixtures.stack",  # temporal-server on PostgreSQL, the workers (make test-stack)
    "fixtures.ci",  # under CI=true a skipped test fails, naming what was missing
]
