"""The benchmarks' own arithmetic: a figure that counts the wrong hosts is worse than none."""

from __future__ import annotations

from bench.fleet import tally
from metalflow.api.fleet import FleetProgress, HostOutcome
from metalflow.api.models import ProvisioningState as S


def test_fleet_counts_only_hosts_that_reached_provisioned() -> None:
    """FleetProgress.settled counts errors and ended workflows; a timed-out fleet leaves hosts
    that never settled (some never started). Each host lands in exactly one bucket."""
    rows = [
        HostOutcome(name="ok", namespace="d", state=S.PROVISIONED.value, settled=True),
        HostOutcome(
            name="err",
            namespace="d",
            state=S.PROVISIONING.value,
            error_type="ProvisioningError",
            settled=True,
        ),
        HostOutcome(name="apply", namespace="d", error_type="ApplyError", settled=True),
        HostOutcome(name="slow", namespace="d", state=S.INSPECTING.value),
        HostOutcome(name="ended", namespace="d", state=S.AVAILABLE.value, settled=True),
    ]
    result = FleetProgress(total=6, settled=4, hosts=rows, failed=rows[1:3], timed_out=True)
    assert tally(result, total=6) == {
        "provisioned": 1,
        "failed": 2,
        "never settled": 2,  # "slow" and the host no workflow was found for
        "settled elsewhere": 1,
    }
