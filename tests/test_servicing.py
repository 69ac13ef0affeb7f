"""Servicing a provisioned host (metal3's HostUpdatePolicy `onReboot`): changed firmware settings
wait for the next reboot the operator asks for, are applied then (state `servicing`), and the
host returns to `provisioned` without reprovisioning, its disk's bytes untouched. Through the
real Temporal dev server and sushy-emulator (its BIOS pending until a boot: testbed/sushy_bios.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os

from temporalio.client import Client
from tests_support import child_steps, record, wait_status
from tests_support import emulator_bios as bios
from tests_support import emulator_bios_writes as bios_writes

from metalflow.api.host import APPLY_FIRMWARE_SETTINGS, CLEAN_HOST, DEPLOY_HOST
from metalflow.api.models import ErrorType, Host, HostUpdatePolicy, UpdatePolicyMode
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter

ON_REBOOT = HostUpdatePolicy(firmware_settings=UpdatePolicyMode.ON_REBOOT)


def disk_digest(dc: Datacenter, index: int) -> str:
    """sha256 over the emulated disk's data extents and their offsets (the 8 GiB file is sparse:
    every write lands in an extent, so any change to the disk changes this)."""
    digest = hashlib.sha256()
    with dc.emulated[index].disk_path.open("rb") as f:
        fd, size, offset = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            f.seek(start)
            digest.update(start.to_bytes(8, "big") + f.read(end - start))
            offset = end
    return digest.hexdigest()


async def change(client: Client, settings: Settings, host: Host, **spec: object) -> Host:
    """Send a new spec and wait until the workflow holds it."""
    changed = host.model_copy(update={"spec": host.spec.model_copy(update=spec)})
    await operations.apply(client, changed, settings)
    deadline = asyncio.get_running_loop().time() + 30
    while await operations.spec(client, host.ref) != changed.spec:
        assert asyncio.get_running_loop().time() < deadline, "the workflow never took the new spec"
        await asyncio.sleep(0.2)
    return changed


async def test_changed_settings_are_applied_at_the_reboot_by_servicing(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    first = {"ProcTurboMode": "Disabled"}
    serviced = dc.host(0, firmware_settings=first, update_policy=ON_REBOOT)
    plain = dc.host(1, firmware_settings=first)  # no policy: a change waits for the next preparing
    for host in (serviced, plain):
        await operations.apply(client, host, settings)
    for host in (serviced, plain):
        st = await wait_status(
            client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type
        )
        assert st.error_type is None, st.error_message
    disks = [disk_digest(dc, i) for i in (0, 1)]
    steps_before = [await child_steps(client, h.ref.workflow_id) for h in (serviced, plain)]
    boots = [len(dc.emulated[i].boots) for i in (0, 1)]

    second = {"ProcTurboMode": "Enabled", "QuietBoot": "false"}
    serviced = await change(client, settings, serviced, firmware_settings=second)
    plain = await change(client, settings, plain, firmware_settings=second)
    for i, host in enumerate((serviced, plain)):  # nothing until a reboot is asked for
        st = await operations.status(client, host.ref)
        assert st.provisioning.state == S.PROVISIONED and len(bios_writes(dc, i)) == 1

    for host in (serviced, plain):
        await operations.signal(client, host.ref, "reboot")
    st = await wait_status(
        client,
        serviced.ref,
        lambda s: (
            (
                s.provisioning.state == S.PROVISIONED
                and s.firmware_settings is not None
                and s.firmware_settings.settings.get("ProcTurboMode") == "Enabled"
            )
            or s.error_type
        ),
    )
    assert st.error_type is None, st.error_message
    assert bios(dc, 0)["ProcTurboMode"] == "Enabled" and bios(dc, 0, pending=True) == {}
    assert bios_writes(dc, 0)[-1] == {"ProcTurboMode": "Enabled", "QuietBoot": False}
    # serviced in place: one step (the settings, with their reboot), no cleaning, no deploy
    steps = await child_steps(client, serviced.ref.workflow_id)
    assert steps[len(steps_before[0]) :] == [APPLY_FIRMWARE_SETTINGS], steps
    assert len(dc.emulated[0].boots) == boots[0] + 1 and dc.emulated[0].boots[-1].target == "Hdd"
    assert disk_digest(dc, 0) == disks[0], "servicing touched the OS disk"

    # without the policy the reboot is only a reboot: the BIOS keeps its settings
    deadline = asyncio.get_running_loop().time() + 60
    while len(dc.emulated[1].boots) == boots[1]:
        assert asyncio.get_running_loop().time() < deadline, "the plain host was never rebooted"
        await asyncio.sleep(0.2)
    assert len(bios_writes(dc, 1)) == 1 and bios(dc, 1)["ProcTurboMode"] == "Disabled"
    assert await child_steps(client, plain.ref.workflow_id) == steps_before[1]
    assert disk_digest(dc, 1) == disks[1]
    await record(client, serviced.ref.workflow_id, "servicing")

    # an invalid change fails servicing (nothing written) until the operator reverts it
    serviced = await change(client, settings, serviced, firmware_settings={"ProcTurboMode": "Maybe"})
    await operations.signal(client, serviced.ref, "reboot")
    st = await wait_status(client, serviced.ref, lambda s: s.error_type is not None)
    assert st.error_type == ErrorType.SERVICING and st.provisioning.state == S.SERVICING
    assert "ProcTurboMode: 'Maybe' is not allowed" in st.error_message
    assert len(bios_writes(dc, 0)) == 2
    serviced = await change(client, settings, serviced, firmware_settings=second)
    st = await wait_status(
        client, serviced.ref, lambda s: s.provisioning.state == S.PROVISIONED and s.error_type is None
    )
    assert len(bios_writes(dc, 0)) == 2, "the reverted settings were already there: nothing written"
    steps = await child_steps(client, serviced.ref.workflow_id)
    assert (
        CLEAN_HOST not in steps[len(steps_before[0]) :] and DEPLOY_HOST not in steps[len(steps_before[0]) :]
    )
    assert disk_digest(dc, 0) == disks[0]
