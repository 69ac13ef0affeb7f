"""After admission, metalflow follows metal3 (issue 16): fields are acted on, never ignored.

Through the real Temporal dev server, sushy-emulator and an emulated server (testbed/hosts.py):
- `raid`: applied while preparing; hardware volumes through Redfish (tests/test_raid.py),
  software volumes by the agent with mdadm (tests/e2e/test_realos_deploy.py boots a VM from one);
  software volumes the host's disks cannot hold fail preparing before cleaning touches a disk,
  and the host never deploys without its RAID;
- `disablePowerOff`: where metalflow would power the host off it reboots it instead;
- `customDeploy.method`: a named deploy method of the agent's registry, unknown ones refused;
- `inspectionMode`: `fast` inspects through the BMC's Redfish inventory alone, `disabled` not at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
from temporalio.client import Client
from tests_support import record

from metalflow.api.models import (
    CleaningMode,
    CustomDeploy,
    ErrorType,
    HostRef,
    HostStatus,
    InspectionMode,
    OperationalStatus,
    RAIDConfig,
    SoftwareRAIDVolume,
)
from metalflow.api.models import ProvisioningState as S
from metalflow.api.status import bmh_status
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter

SCHEMA = json.loads((Path(__file__).parent / "data" / "metal3-bmh-status.schema.json").read_text())


async def wait_status(
    client: Client, ref: HostRef, pred: Callable[[HostStatus], Any], timeout: float = 240
) -> HostStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred(st := await operations.status(client, ref)):
        assert asyncio.get_running_loop().time() < deadline, f"not reached; last: {st.model_dump_json()}"
        await asyncio.sleep(0.3)
    return st


async def test_software_raid_the_disks_cannot_hold_fails_preparing_before_any_disk_is_touched(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    """The emulated server has one disk: a mirror needs two. The plan is checked against the
    inventory before cleaning, so preparing fails naming the field and the disk keeps its bytes."""
    software = dc.host(
        1, root_device_hints=None, raid=RAIDConfig(software_raid_volumes=[SoftwareRAIDVolume(level="1")])
    )
    disk = dc.emulated[1].disk_path
    disk.parent.mkdir(parents=True, exist_ok=True)
    with disk.open("wb") as f:
        f.truncate(dc.emulated[1].disk_size)
        f.write(b"previous tenant")
    await operations.apply(client, software, settings)
    st = await wait_status(client, software.ref, lambda s: s.error_type is not None)
    assert st.error_type == ErrorType.PREPARATION and st.provisioning.state == S.PREPARING
    assert st.operational_status == OperationalStatus.ERROR
    assert "spec.raid.softwareRAIDVolumes: software RAID needs at least two disks" in st.error_message
    assert "(no disk was touched)" in st.error_message and "(RAIDConfigurationError)" in st.error_message
    doc = bmh_status(st)
    jsonschema.validate(doc, SCHEMA)
    assert doc["errorType"] == "preparation error"
    with disk.open("rb") as f:  # the first bytes only: the sparse disk is 8 GiB
        assert f.read(15) == b"previous tenant"  # cleaning never ran
    # never deployed without its RAID: no boot from disk
    assert all(b.target != "Hdd" for b in dc.emulated[1].boots), dc.emulated[1].boots
    await record(client, software.ref.workflow_id, "software-raid-precheck")


async def test_disable_power_off_reboots_instead(client: Client, settings: Settings, dc: Datacenter) -> None:
    """Deleting an adopted host powers it off first; with disablePowerOff it is rebooted instead."""
    kept_on = dc.host(0, disable_power_off=True, externally_provisioned=True, image=None)
    control = dc.host(1, externally_provisioned=True, image=None)
    for host in (kept_on, control):
        await operations.apply(client, host, settings)
    for host in (kept_on, control):
        # adopted, then powered on at rest because online is true
        await wait_status(
            client, host.ref, lambda s: s.provisioning.state == S.EXTERNALLY_PROVISIONED and s.powered_on
        )
    boots = [len(emu.boots) for emu in dc.emulated]
    for host in (kept_on, control):
        await operations.signal(client, host.ref, "delete")
    results = [await operations.handle_for(client, h.ref).result() for h in (kept_on, control)]
    assert results[0].deleted and results[0].powered_on, "disablePowerOff: still on after the delete"
    assert len(dc.emulated[0].boots) == boots[0] + 1, "rebooted instead of powered off"
    assert results[1].deleted and not results[1].powered_on, "without it the host is powered off"
    assert len(dc.emulated[1].boots) == boots[1]
    await record(client, kept_on.ref.workflow_id, "metal3-disable-power-off")


async def test_inspection_mode_fast_and_disabled(client: Client, settings: Settings, dc: Datacenter) -> None:
    """`fast` inspects through Redfish alone; `disabled` inspects nothing; neither boots the host."""
    no_clean = {"automated_cleaning_mode": CleaningMode.DISABLED, "image": None}
    fast = dc.host(0, inspection_mode=InspectionMode.FAST, **no_clean)
    disabled = dc.host(1, inspection_mode=InspectionMode.DISABLED, **no_clean)
    for host in (fast, disabled):
        await operations.apply(client, host, settings)
    done = [
        await wait_status(client, h.ref, lambda s: s.provisioning.state == S.AVAILABLE or s.error_type)
        for h in (fast, disabled)
    ]
    for st in done:
        assert st.error_type is None, st.error_message
    hardware = done[0].hardware
    assert hardware is not None, "fast inspection reported no hardware"
    # what sushy-emulator's system reports out of band (the agent would report the worker's own
    # CPUs and the emulated disk): the emulator's vendor name and the system's NIC
    assert hardware.system_vendor.manufacturer == "Sushy Emulator"
    assert [n.mac for n in hardware.nics] == [dc.systems[0].mac]
    assert done[0].operation_history.inspect.end is not None
    assert done[1].hardware is None, "inspection disabled: nothing inspected"
    for emu in dc.emulated:
        # an online host at rest is powered on to its disk (Hdd, no agent); no ramdisk booted
        booted = [b for b in emu.boots if b.agent or b.target != "Hdd"]
        assert booted == [], f"inspection booted the host: {emu.boots}"
    await record(client, fast.ref.workflow_id, "metal3-inspection-fast")
    await record(client, disabled.ref.workflow_id, "metal3-inspection-disabled")


async def test_custom_deploy_selects_a_named_method_of_the_agent(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    """metal3's spec.customDeploy: a known method deploys; an unknown one is a provisioning error
    naming the known ones (never a silent fall-back to writing spec.image)."""
    known = dc.host(0, custom_deploy=CustomDeploy(method="write_image"))
    unknown = dc.host(1, custom_deploy=CustomDeploy(method="install_coreos"))
    for host in (known, unknown):
        await operations.apply(client, host, settings)
    done = await wait_status(
        client, known.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type
    )
    assert done.error_type is None, done.error_message
    assert dc.image is not None
    with dc.emulated[0].disk_path.open("rb") as f:
        assert f.read(dc.image.size) == dc.image.path.read_bytes(), "write_image wrote spec.image"
    failed = await wait_status(client, unknown.ref, lambda s: s.error_type is not None)
    assert failed.error_type == ErrorType.PROVISIONING and failed.provisioning.state == S.PROVISIONING
    assert "spec.customDeploy.method 'install_coreos' is not a deploy method" in failed.error_message
    assert "known: write_image" in failed.error_message and "(UnknownDeployMethod)" in failed.error_message
    assert failed.provisioning_fail_count == 1 and failed.last_attempted_image == unknown.spec.image
    with dc.emulated[1].disk_path.open("rb") as f:
        assert not f.read(1 << 20).strip(b"\0"), "an unknown method wrote nothing"
    await record(client, known.ref.workflow_id, "metal3-custom-deploy")
    await record(client, unknown.ref.workflow_id, "metal3-custom-deploy-unknown")
