"""HostFirmwareComponents applied while preparing: one Redfish SimpleUpdate per update, its Task
followed to the end, the host booted so the new firmware runs, the versions reported. Through the
real Temporal dev server and sushy-emulator, whose update Tasks run for a while and can fail
(testbed/sushy_tasks.py). A worker killed while the BMC's answer to the SimpleUpdate is in flight
does not flash twice: counted at the emulator and at the proxy in front of it."""

from __future__ import annotations

import requests
from fixtures.crash import Plant, until
from temporalio.client import Client
from tests_support import activity_runs, child_steps, record, step_histories, wait_status

from metalflow.api.firmware_components import FirmwareUpdate
from metalflow.api.host import APPLY_FIRMWARE_UPDATES, CLEAN_HOST
from metalflow.api.models import BMCDetails, ErrorType
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.faultproxy import Fault, FaultProxy, Rule


def bios_version(dc: Datacenter, index: int) -> str:
    assert dc.sushy is not None
    r = requests.get(dc.sushy.system_url(dc.systems[index].uuid), auth=("admin", dc.password), timeout=10)
    r.raise_for_status()
    return str(r.json()["BiosVersion"])


def simple_updates(dc: Datacenter, index: int) -> int:
    """SimpleUpdate requests the emulator took for one system (testbed/sushy_bios.py logs each)."""
    assert dc.sushy is not None
    return dc.sushy.process.log_path.read_text().count(
        f"metalflow-testbed: SimpleUpdate {dc.systems[index].uuid} "
    )


async def test_updates_are_applied_while_preparing_and_reported(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    good = dc.host(
        0, firmware_updates=[FirmwareUpdate(component="bios", url="http://images.example/bios-1.1.bin")]
    )
    bad = dc.host(
        1, firmware_updates=[FirmwareUpdate(component="bios", url="http://images.example/bios-9.fail")]
    )
    assert bios_version(dc, 0) == "1.0.0"
    for host in (good, bad):
        await operations.apply(client, host, settings)
    st = await wait_status(client, good.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type)
    assert st.error_type is None, st.error_message
    assert st.firmware_components is not None
    bios = next(c for c in st.firmware_components.components if c.component == "bios")
    assert (bios.initial_version, bios.current_version, bios.last_version_flashed) == (
        "1.0.0",
        "1.1.0",
        "1.1.0",
    )
    assert bios.updated_at is not None and st.firmware_components.updates == good.spec.firmware_updates
    assert bios_version(dc, 0) == "1.1.0" and simple_updates(dc, 0) == 1
    steps = await child_steps(client, good.ref.workflow_id)
    assert steps.index(APPLY_FIRMWARE_UPDATES) < steps.index(CLEAN_HOST), steps
    await record(client, good.ref.workflow_id, "firmware-updates")

    # the BMC's task ends in Exception: preparing fails with its message, nothing cleaned
    st = await wait_status(client, bad.ref, lambda s: s.error_type is not None)
    assert st.error_type == ErrorType.PREPARATION and st.provisioning.state == S.PREPARING
    assert "(FirmwareUpdateFailed)" in st.error_message and "ended Exception" in st.error_message, (
        st.error_message
    )
    assert "bios-9.fail" in st.error_message
    assert bios_version(dc, 1) == "1.0.0" and simple_updates(dc, 1) == 1
    assert CLEAN_HOST not in await child_steps(client, bad.ref.workflow_id)


async def test_a_worker_killed_while_the_update_starts_does_not_flash_twice(
    world: tuple[Plant, Client, Datacenter, FaultProxy, FaultProxy],
) -> None:
    """The SimpleUpdate reaches the BMC (its Task starts) but the answer is held at the proxy
    and the worker dies with it; the retried activity finds the Task on the BMC instead of
    posting again, and the host is provisioned with the firmware flashed once."""
    the_plant, client, dc, bmc, _ = world
    host = dc.host(
        0, firmware_updates=[FirmwareUpdate(component="bios", url="http://images.example/bios-1.1.bin")]
    )
    address = f"redfish+http://127.0.0.1:{bmc.port}/redfish/v1/Systems/{dc.systems[0].uuid}"
    host = host.model_copy(
        update={
            "spec": host.spec.model_copy(
                update={"bmc": BMCDetails(address=address, credentials=dc.credentials)}
            )
        }
    )
    bmc.add(Rule(Fault.HOLD_RESPONSE, method="POST", path="UpdateService.SimpleUpdate", times=1))
    await operations.apply(client, host, Settings())

    async def held() -> bool:
        return bmc.held == 1

    await until("the SimpleUpdate answer held in flight", held)
    the_plant.kill_worker()
    the_plant.start_worker()
    bmc.release()

    async def provisioned() -> bool:
        st = await operations.status(client, host.ref)
        assert st.error_type is None, st.error_message
        return st.provisioning.state == S.PROVISIONED

    await until("provisioned after the crash", provisioned, timeout=240)
    assert simple_updates(dc, 0) == 1, "flashed twice"
    assert bmc.count("POST", "UpdateService.SimpleUpdate") == 1
    assert bios_version(dc, 0) == "1.1.0"
    runs = [
        r
        for r in activity_runs(await step_histories(client, host.ref.workflow_id))
        if r.name == "bmc.start_firmware_update"
    ]
    assert [(r.attempt, r.outcome) for r in runs] == [(2, "completed")], runs


async def test_a_sick_bmc_answering_the_update_with_503s_flashes_once(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    """The fault proxy answers the first SimpleUpdate with a 503 (never forwarded) and the
    first reads of its Task with 503s: the step retries through them and the BIOS is flashed once."""
    assert dc.sushy is not None
    async with FaultProxy(dc.sushy.url) as bmc:
        bmc.add(Rule(Fault.UNAVAILABLE, method="POST", path="UpdateService.SimpleUpdate", times=1))
        bmc.add(Rule(Fault.UNAVAILABLE, method="GET", path="/TaskService/Tasks/", times=2))
        host = dc.host(
            0, firmware_updates=[FirmwareUpdate(component="bios", url="http://images.example/bios-1.1.bin")]
        )
        address = f"redfish+http://127.0.0.1:{bmc.port}/redfish/v1/Systems/{dc.systems[0].uuid}"
        spec = host.spec.model_copy(update={"bmc": BMCDetails(address=address, credentials=dc.credentials)})
        await operations.apply(client, host.model_copy(update={"spec": spec}), settings)
        st = await wait_status(
            client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type
        )
        assert st.error_type is None, st.error_message
        assert bmc.count("POST", "UpdateService.SimpleUpdate") == 2, "the 503 was retried"
        assert simple_updates(dc, 0) == 1 and bios_version(dc, 0) == "1.1.0"
