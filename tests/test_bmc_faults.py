"""Sick BMCs: a fault-injecting proxy in front of sushy-emulator, one schedule per host.

503s, TCP resets, 10 s stalls and truncated JSON are absorbed by bounded, backed-off activity
retries (visible in the history) and every host still reaches provisioned; a BMC that stays
broken ends in "power management error" with a message that says what failed and how often,
errorCount counts each failure (a BMC that then rejects the credentials fails at once,
unretried), and the host recovers once the BMC does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest_asyncio
from temporalio.api.enums.v1 import RetryState
from temporalio.client import Client
from test_lifecycle import wait_status
from tests_support import activity_runs, backing_off, step_histories

from metalflow.api.models import BMCDetails, ErrorType, Host, HostStatus, OperationalStatus
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.faultproxy import Fault, FaultProxy, Rule
from worker.control import build_worker

SYSTEMS = "/redfish/v1/Systems/"
# Each schedule injects at most five faults: no activity can lose all six attempts to them.
SCHEDULES = {
    Fault.UNAVAILABLE: Rule(Fault.UNAVAILABLE, path=SYSTEMS, every=3, times=5),
    Fault.RESET: Rule(Fault.RESET, path=SYSTEMS, every=4, times=5),
    Fault.STALL: Rule(Fault.STALL, path=SYSTEMS, every=6, times=2, stall_seconds=10),
    Fault.BAD_JSON: Rule(Fault.BAD_JSON, path=SYSTEMS, every=4, times=4),
}
BROKEN = len(SCHEDULES)  # the host whose BMC breaks for good
MISSING_IMAGE = BROKEN + 1


@pytest_asyncio.fixture
async def sick(
    client: Client, settings: Settings, ns: str
) -> AsyncIterator[tuple[Datacenter, list[FaultProxy]]]:
    async with Datacenter(settings, hosts=len(SCHEDULES) + 2, namespace=ns, prefix="sick") as dc:
        assert dc.sushy is not None
        proxies = [await FaultProxy(dc.sushy.url).start() for _ in dc.systems]
        try:
            with ThreadPoolExecutor(max_workers=32) as executor:
                async with build_worker(client, settings, executor):
                    yield dc, proxies
        finally:
            for proxy in proxies:
                await proxy.stop()


def behind(dc: Datacenter, proxy: FaultProxy, index: int, **changes: object) -> Host:
    """Host `index` with its BMC address pointing at its proxy instead of the emulator."""
    host = dc.host(index, **changes)
    address = f"redfish+http://127.0.0.1:{proxy.port}{SYSTEMS}{dc.systems[index].uuid}"
    return host.model_copy(
        update={
            "spec": host.spec.model_copy(
                update={"bmc": BMCDetails(address=address, credentials=dc.credentials)}
            )
        }
    )


async def test_flaky_bmcs_still_provision_and_a_dead_bmc_is_a_power_management_error(
    client: Client, settings: Settings, sick: tuple[Datacenter, list[FaultProxy]]
) -> None:
    dc, proxies = sick
    hosts = []
    for index, rule in enumerate(SCHEDULES.values()):
        proxies[index].add(
            Rule(rule.fault, path=rule.path, every=rule.every, times=rule.times, stall_seconds=10)
        )
        hosts.append(behind(dc, proxies[index], index))
    broken = behind(dc, proxies[BROKEN], BROKEN, image=None, externally_provisioned=True)
    missing = dc.host(
        MISSING_IMAGE, image=dc.image_spec().model_copy(update={"url": dc.image_spec().url + ".nope"})
    )
    for host in [*hosts, broken, missing]:
        await operations.apply(client, host, settings)

    async def dead_bmc() -> list[HostStatus]:
        """Adopted and powered on through a healthy BMC; then it dies and the operator powers off."""
        await wait_status(
            client, broken.ref, lambda s: s.provisioning.state == S.EXTERNALLY_PROVISIONED and s.powered_on
        )
        proxies[BROKEN].add(Rule(Fault.UNAVAILABLE))
        off = broken.spec.model_copy(update={"online": False})
        await operations.handle_for(client, broken.ref).execute_update("update_spec", off)
        seen = [await wait_status(client, broken.ref, lambda s: s.error_count == 1, timeout=150)]
        # it comes back with factory credentials: rejected at once, not retried, counted again
        proxies[BROKEN].clear()
        proxies[BROKEN].add(Rule(Fault.UNAUTHORIZED))
        await backing_off(client, broken.ref.workflow_id)  # a retry sent before would be dropped
        await operations.signal(client, broken.ref, "retry")
        # (the wait is the check that errorCount went on to 2: asserting it again would restate it)
        seen.append(await wait_status(client, broken.ref, lambda s: s.error_count == 2, timeout=150))
        proxies[BROKEN].clear()  # the BMC is fixed for real
        await backing_off(client, broken.ref.workflow_id)
        await operations.signal(client, broken.ref, "retry")
        seen.append(
            await wait_status(client, broken.ref, lambda s: not s.powered_on and s.error_type is None)
        )
        return seen

    settled, dead = await asyncio.gather(
        asyncio.gather(
            *(
                wait_status(
                    client,
                    h.ref,
                    lambda s: s.provisioning.state == S.PROVISIONED or s.error_type is not None,
                    timeout=240,
                )
                for h in hosts
            )
        ),
        dead_bmc(),
    )

    # every flaky host made it, and each really was hit by its fault
    for st, proxy, fault in zip(settled, proxies, SCHEDULES, strict=False):
        assert st.provisioning.state == S.PROVISIONED and st.error_type is None, (fault, st.error_message)
        assert proxy.count(fault=fault) >= 1, f"{fault}: the proxy injected nothing"
    # ... and the failures reached Temporal's retries, bounded and backed off, in the history
    retried = {}
    for host, fault in zip(hosts, SCHEDULES, strict=True):
        runs = [
            r
            for r in activity_runs(await step_histories(client, host.ref.workflow_id))
            if r.name.startswith("bmc.")
        ]
        assert runs and all(r.outcome == "completed" for r in runs), fault
        assert all(r.maximum_attempts == 6 and r.backoff == 2.0 for r in runs)
        retried[fault] = max(r.attempt for r in runs)
    assert retried[Fault.UNAVAILABLE] > 1 and retried[Fault.RESET] > 1 and retried[Fault.BAD_JSON] > 1, (
        retried
    )

    # the dead BMC: power management error, counted per failure, with what failed and how often
    first, second, recovered = dead
    assert (
        first.error_type == ErrorType.POWER_MANAGEMENT and first.operational_status == OperationalStatus.ERROR
    )
    assert f"127.0.0.1:{proxies[BROKEN].port} failed with HTTP 503 (attempt 6)" in first.error_message
    assert "BMCServerError" in first.error_message
    assert second.error_type == ErrorType.POWER_MANAGEMENT
    assert "rejected the credentials" in second.error_message and "BMCAuthError" in second.error_message
    assert recovered.error_count == 0 and recovered.operational_status == OperationalStatus.OK
    power = [
        r
        for r in activity_runs(await step_histories(client, broken.ref.workflow_id))
        if r.name == "bmc.power"
    ]
    exhausted, rejected = (r for r in power if r.outcome == "failed")
    assert exhausted.attempt == 6 and exhausted.retry_state == RetryState.RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED
    assert rejected.attempt == 1 and rejected.retry_state == RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE
    assert power[-1].outcome == "completed" and len(power) == 4, power  # adopt-time power-on, 2 failures, off
    # backoff: six attempts 1, 2, 4, 8 and 16 s apart cannot fit in less than 31 s
    refused = [e.at for e in proxies[BROKEN].log if e.fault == Fault.UNAVAILABLE]
    assert refused[-1] - refused[0] >= 31

    # bad input through the whole workflow: a missing image is a provisioning error naming the URL
    st = await wait_status(client, missing.ref, lambda s: s.error_type is not None, timeout=240)
    assert st.error_type == ErrorType.PROVISIONING and st.provisioning.state == S.PROVISIONING
    assert (
        "ImageUnavailable" in st.error_message and ".nope" in st.error_message and "404" in st.error_message
    )
    assert st.provisioning.image is None, "nothing may be recorded as provisioned"
