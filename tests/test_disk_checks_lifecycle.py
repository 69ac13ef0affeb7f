"""spec.erase and the checks that keep disks untouched, through the whole host lifecycle on the
dev server with emulated servers (file disks; the real disks are in tests/e2e):

- spec.erase: cleaning erases and verifies every disk; the per-disk record reaches the status
  query and the cleaning step's history;
- rootDeviceHints that match no disk inspection found: a preparation error before cleaning, the
  disk untouched;
- networkData naming a NIC the host lacks: a provisioning error before the image is written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest_asyncio
from temporalio.client import Client
from test_lifecycle import wait_status
from tests_support import activity_results, record, step_histories

from metalflow.api.agent import AGENT_CLEAN, CleanResult
from metalflow.api.erase import EraseMethod, EraseSpec
from metalflow.api.models import ErrorType, RootDeviceHints, SecretRef
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter, write_secret
from testbed.images import MARKER
from worker.control import build_worker

MIB = 1 << 20
DISK = 256 * MIB
CUSTOMER = b"customer data, not to be lost by mistake " * 100
SEEDED = (0, 100 * MIB + 17, DISK - 65 * MIB)  # partition table, the middle, before the config drive


@pytest_asyncio.fixture
async def dc(client: Client, settings: Settings, ns: str) -> AsyncIterator[Datacenter]:
    async with Datacenter(settings, hosts=3, namespace=ns, disk_bytes=DISK, prefix="disk") as datacenter:
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                yield datacenter


def seed(dc: Datacenter, index: int) -> None:
    """The disk as a previous tenant left it (the agent keeps a file disk of the right size)."""
    path = dc.emulated[index].disk_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(DISK)
        for off in SEEDED:
            f.seek(off)
            f.write(CUSTOMER)


def seeded_left(dc: Datacenter, index: int) -> list[bool]:
    with dc.emulated[index].disk_path.open("rb") as f:
        out = []
        for off in SEEDED:
            f.seek(off)
            out.append(f.read(len(CUSTOMER)) == CUSTOMER)
        return out


async def test_erase_records_every_disk_and_bad_hints_or_macs_stop_before_any_disk_is_touched(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    for i in range(3):
        seed(dc, i)
    serial = [f"emu-{s.name}" for s in dc.systems]
    erased = dc.host(
        0, erase=EraseSpec(verify_samples=32), root_device_hints=RootDeviceHints(serial_number=serial[0])
    )
    bad_hints = dc.host(1, root_device_hints=RootDeviceHints(serial_number="no-such-disk"))
    net = SecretRef(
        name="net", namespace=dc.namespace, path=str(dc.state / "secrets" / dc.namespace / "net.yaml")
    )
    other_mac = "52:54:00:fe:fe:fe"
    network_data = {
        "links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": other_mac}],
        "networks": [
            {
                "id": "n0",
                "link": "eth0",
                "type": "ipv4",
                "ip_address": "192.0.2.50",
                "netmask": "255.255.255.0",
            }
        ],
    }
    write_secret(Path(str(net.path)), {"networkData": json.dumps(network_data)})
    bad_net = dc.host(2, network_data=net, root_device_hints=RootDeviceHints(serial_number=serial[2]))
    for host in (erased, bad_hints, bad_net):
        await operations.apply(client, host, settings)

    done = lambda s: s.provisioning.state == S.PROVISIONED or s.error_type  # noqa: E731
    st0, st1, st2 = await asyncio.gather(
        wait_status(client, erased.ref, done),
        wait_status(client, bad_hints.ref, done),
        wait_status(client, bad_net.ref, done),
    )

    # spec.erase: erased and read back, recorded per disk in status and in the step's history
    assert st0.error_type is None, st0.error_message
    [rec] = st0.erasure
    assert (rec.device, rec.serial, rec.size_bytes) == ("/dev/sda", serial[0], DISK)
    assert rec.method == EraseMethod.OVERWRITE and rec.verified == "zeroes" and rec.samples >= 2
    assert seeded_left(dc, 0) == [False, False, False]
    with dc.emulated[0].disk_path.open("rb") as f:
        assert f.read(len(MARKER)) == MARKER  # then the image went on
    cleaned = activity_results(await step_histories(client, erased.ref.workflow_id), AGENT_CLEAN, CleanResult)
    assert [r.erasure for r in cleaned] == [[rec]]

    # hints that match no disk: stopped in preparing, before cleaning touched the disk
    assert st1.provisioning.state == S.PREPARING and st1.error_type == ErrorType.PREPARATION
    assert "spec.rootDeviceHints: no disk matches" in st1.error_message
    assert f"serial='{serial[1]}'" in st1.error_message and "NoRootDeviceMatch" in st1.error_message
    assert seeded_left(dc, 1) == [True, True, True]

    # networkData with a MAC the host lacks: stopped before the image was written
    assert st2.provisioning.state == S.PROVISIONING and st2.error_type == ErrorType.PROVISIONING
    assert "NetworkDataUnknownMAC" in st2.error_message and "networkData.links[0]" in st2.error_message
    assert dc.systems[2].mac in st2.error_message and other_mac not in st2.error_message
    with dc.emulated[2].disk_path.open("rb") as f:
        assert f.read(len(MARKER)) != MARKER
    assert not st2.erasure
    for host, name in ((erased, "erase"), (bad_hints, "hints-precheck"), (bad_net, "network-data-precheck")):
        await record(client, host.ref.workflow_id, name)
