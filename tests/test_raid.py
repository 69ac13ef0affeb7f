"""spec.raid's hardwareRAIDVolumes built through Redfish Storage/Volumes while preparing, on the
test bed's emulated RAID controller (testbed/sushy_raid.py: four drives, RAID0/1/5/10, a real
controller's refusals). Built before cleaning, as metal3 does (cleaning then wipes what the new
volumes hold); tests/histories/*hardware-raid.json replays the order from before that patch.
Software RAID is the agent's (tests/test_software_raid.py, tests/e2e/test_realos_deploy.py)."""

from __future__ import annotations

import json
from typing import Any

import requests
from temporalio.client import Client
from tests_support import child_steps, record, wait_status

from metalflow.api.host import CLEAN_HOST, CONFIGURE_RAID
from metalflow.api.models import ErrorType, HardwareRAIDVolume, RAIDConfig
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter

STORAGE = "RAID.Integrated.1-1"


def volumes(dc: Datacenter, index: int) -> list[dict[str, Any]]:
    """The volumes the emulated controller holds, read as a Redfish client would."""
    assert dc.sushy is not None
    base = dc.sushy.system_url(dc.systems[index].uuid) + f"/Storage/{STORAGE}/Volumes"
    auth = ("admin", dc.password)
    members = requests.get(base, auth=auth, timeout=10).json()["Members"]
    root = dc.sushy.url
    return [requests.get(root + m["@odata.id"], auth=auth, timeout=10).json() for m in members]


def raid_log(dc: Datacenter, index: int, what: str) -> list[str]:
    assert dc.sushy is not None
    marker = f"metalflow-testbed: Volume {what} {dc.systems[index].uuid} "
    return [
        ln.split(marker, 1)[1] for ln in dc.sushy.process.log_path.read_text().splitlines() if marker in ln
    ]


async def test_hardware_raid_is_built_through_redfish_while_preparing(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    root = HardwareRAIDVolume(level="1", name="root", rotational=False)  # the two SSDs
    scratch = HardwareRAIDVolume(
        level="0", name="scratch", number_of_physical_disks=2, rotational=True, size_gibibytes=100
    )
    built = dc.host(0, raid=RAIDConfig(hardware_raid_volumes=[root, scratch]))
    # RAID 5 needs three drives; the controller has two rotational ones
    short = dc.host(
        1, raid=RAIDConfig(hardware_raid_volumes=[HardwareRAIDVolume(level="5", rotational=True)])
    )
    for host in (built, short):
        await operations.apply(client, host, settings)

    st = await wait_status(client, built.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type)
    assert st.error_type is None, st.error_message
    made = {v["Name"]: v for v in volumes(dc, 0)}
    assert set(made) == {"root", "scratch"}, made
    drives = {
        name: sorted(d["@odata.id"].rsplit("/", 1)[1] for d in v["Links"]["Drives"])
        for name, v in made.items()
    }
    assert drives == {"root": ["Disk.Bay.0", "Disk.Bay.1"], "scratch": ["Disk.Bay.2", "Disk.Bay.3"]}
    assert made["root"]["RAIDType"] == "RAID1" and made["scratch"]["RAIDType"] == "RAID0"
    assert made["scratch"]["CapacityBytes"] == 100 << 30
    assert [json.loads(c)["RAIDType"] for c in raid_log(dc, 0, "create")] == ["RAID1", "RAID0"]
    steps = await child_steps(client, built.ref.workflow_id)
    assert steps.index(CONFIGURE_RAID) < steps.index(CLEAN_HOST), steps
    assert steps.count(CONFIGURE_RAID) == 1, steps
    await record(client, built.ref.workflow_id, "hardware-raid-before-cleaning")

    st = await wait_status(client, short.ref, lambda s: s.error_type is not None)
    assert st.error_type == ErrorType.PREPARATION and st.provisioning.state == S.PREPARING
    assert "(RAIDConfigurationError)" in st.error_message
    assert "RAID 5 needs 3 rotational drives, RAID.Integrated.1-1 has 2 free" in st.error_message, (
        st.error_message
    )
    assert volumes(dc, 1) == [] and raid_log(dc, 1, "create") == [] and raid_log(dc, 1, "delete") == []


async def test_preparing_again_replaces_the_volumes(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    """Ironic's order: the controller's volumes are deleted, then the spec's are created."""
    first = dc.host(
        0, raid=RAIDConfig(hardware_raid_volumes=[HardwareRAIDVolume(level="1", name="os")]), image=None
    )
    await operations.apply(client, first, settings)
    st = await wait_status(client, first.ref, lambda s: s.provisioning.state == S.AVAILABLE or s.error_type)
    assert st.error_type is None, st.error_message
    [os_volume] = volumes(dc, 0)
    # inspection asked again runs preparing again: the old volume goes, the new spec's comes
    second = first.model_copy(
        update={
            "spec": first.spec.model_copy(
                update={
                    "raid": RAIDConfig(hardware_raid_volumes=[HardwareRAIDVolume(level="1+0", name="big")])
                }
            )
        }
    )
    await operations.apply(client, second, settings)
    await operations.signal(client, first.ref, "inspect")
    st = await wait_status(
        client,
        first.ref,
        lambda s: (s.provisioning.state == S.AVAILABLE and bool(raid_log(dc, 0, "delete"))) or s.error_type,
    )
    assert st.error_type is None, st.error_message
    [big] = volumes(dc, 0)
    assert big["Name"] == "big" and big["RAIDType"] == "RAID10" and len(big["Links"]["Drives"]) == 4
    assert raid_log(dc, 0, "delete") == [os_volume["Id"]]
