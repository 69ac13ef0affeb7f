"""End to end through the real Temporal dev server, sushy-emulator and emulated servers.

A host is registered, inspected (its agent comes up only because the BMC network-booted
it), cleaned, written with a real image over HTTP, booted from disk, and deprovisioned.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import requests
from history_scan import assert_no_secret_in, assert_no_secret_in_histories
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import ActivityEnvironment
from tests_support import activity_results, patch_ids, record, step_histories

from activities.configdrive import stage_configdrive
from metalflow.api.configdrive import (
    CONFIGDRIVE_REMOVE,
    CONFIGDRIVE_STAGE,
    ConfigDriveRequest,
    ConfigDriveStaged,
)
from metalflow.api.models import BMCDetails, ErrorType, HostRef, HostStatus, OperationalStatus, SecretRef
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.images import MARKER
from worker.control import build_worker
from workflows.patches import BASELINE


@pytest_asyncio.fixture
async def dc(client: Client, settings: Settings, ns: str) -> AsyncIterator[Datacenter]:
    async with Datacenter(settings, hosts=2, namespace=ns) as datacenter:
        with ThreadPoolExecutor(max_workers=16) as executor:
            worker = build_worker(client, settings, executor)
            async with worker:
                yield datacenter


async def wait_status(client: Client, ref, pred, timeout: float = 180) -> HostStatus:  # type: ignore[no-untyped-def]
    """Poll the status query until `pred` holds (condition wait with a deadline)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        st = await operations.status(client, ref)
        if pred(st):
            return st
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"condition not reached in {timeout}s; last status: "
                f"{st.model_dump_json(exclude={'hardware'})}\n{await what_it_waits_for(client, ref)}"
            )
        await asyncio.sleep(0.3)


async def what_it_waits_for(client: Client, ref: HostRef) -> str:
    """The host workflow's pending activities and children and its last events: where it is stuck."""
    handle = client.get_workflow_handle(ref.workflow_id)
    desc = await handle.describe()
    raw = desc.raw_description
    pending = [
        f"activity {a.activity_type.name} attempt {a.attempt} state {a.state} last failure "
        f"{a.last_failure.message!r}"
        for a in raw.pending_activities
    ] + [f"child {c.workflow_type_name} {c.workflow_id}" for c in raw.pending_children]
    events = [e async for e in handle.fetch_history_events()]
    tail = [f"{e.event_id} {e.event_type} {e.event_time.ToDatetime():%H:%M:%S.%f}" for e in events[-25:]]
    return "pending: " + ("; ".join(pending) or "nothing") + "\nlast events:\n" + "\n".join(tail)


def emu_mac(dc: Datacenter, index: int) -> str:
    return dc.systems[index].mac


async def http_status(url: str) -> int:
    return (await asyncio.to_thread(requests.get, url, timeout=10)).status_code


def on_boot_server(dc: Datacenter, url: str) -> bool:
    """Whether the boot server still holds the file behind one of its URLs."""
    path = urlsplit(url).path.lstrip("/")
    return (dc.settings.boot_dir / path).is_file()


async def assert_no_bmc_password(client: Client, dc: Datacenter, ref: HostRef, at_least: int) -> None:
    """Not in any payload of the host's history nor its children's, nor in its status."""
    await assert_no_secret_in_histories(client, [dc.password], ref.workflow_id, at_least=at_least)
    assert_no_secret_in(await operations.status(client, ref), [dc.password], "the host's status")


async def test_host_is_provisioned_then_deprovisioned(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    host = dc.host(0)
    await operations.apply(client, host, settings)
    st = await wait_status(client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type)
    assert st.error_type is None, st.error_message
    assert st.provisioning.state == S.PROVISIONED and st.operational_status == OperationalStatus.OK
    assert st.powered_on
    assert st.provisioning.image == host.spec.image
    assert st.good_credentials.credentials == host.spec.bmc.credentials
    assert st.good_credentials.credentials_version
    # inventory came from the agent inside the (emulated) ramdisk
    assert st.hardware is not None
    assert [n.mac for n in st.hardware.nics] == [host.spec.boot_mac_address]
    assert st.hardware.storage[0].name == "/dev/sda" and st.hardware.storage[0].size_bytes == 8 << 30
    assert st.hardware.cpu.count == os.cpu_count() and st.hardware.ram_mebibytes > 0
    for step in ("register_", "inspect", "provision"):
        metric = getattr(st.operation_history, step)
        assert metric.start and metric.end and metric.end >= metric.start, step

    emu = dc.emulated[0]
    # the firmware network-booted the ramdisk first, and last booted from disk without it
    assert emu.boots[0].target == "Pxe" and emu.boots[0].agent
    assert emu.boots[-1].target == "Hdd" and not emu.boots[-1].agent
    assert dc.image is not None
    with emu.disk_path.open("rb") as f:  # the image's bytes only, not the whole 8 GiB disk
        disk = f.read(dc.image.size)
    assert disk == dc.image.path.read_bytes()
    assert disk.startswith(MARKER)
    # the config drive (ISO 9660, label config-2) sits in the disk's last 64 MiB
    with emu.disk_path.open("rb") as f:
        f.seek((8 << 30) - (64 << 20) + 0x8000)
        pvd = f.read(80)
    assert pvd[1:6] == b"CD001" and pvd[40:48] == b"config-2"

    # keyed by namespace too: other tests' hosts of the same name live in the same dev server
    rows = {r.ref.host_id: r for r in await operations.list_hosts(client, 'HostState="provisioned"')}
    assert rows[host.ref.host_id].image == host.spec.image.url  # type: ignore[union-attr]

    # the config drive (its URL is in history) was on the boot server for its deploy attempt only
    steps = await step_histories(client, host.ref.workflow_id)
    # One patch marker in all (issue 28: each costs a visibility write): the host records the
    # baseline that stands for every patch, and its steps are told so in their input.
    assert {wid.removeprefix(host.ref.workflow_id): patch_ids(ev) for wid, ev in steps.items()} == {
        "": [BASELINE],
        "/0001-RegisterHost": [],
        "/0002-InspectHost": [],
        "/0003-CleanHost": [],
        "/0004-DeployHost": [],
    }
    [drive] = activity_results(steps, CONFIGDRIVE_STAGE, ConfigDriveStaged)
    assert not on_boot_server(dc, drive.url)
    assert activity_results(steps, CONFIGDRIVE_REMOVE, type(None)) == [None]
    # one an interrupted deploy would have left behind goes with the deprovisioning
    left = ConfigDriveRequest(host=host.ref, attempt="interrupted")
    left_behind = await asyncio.to_thread(ActivityEnvironment().run, stage_configdrive, left)
    assert on_boot_server(dc, left_behind.url)
    # and its URL alone opens nothing: the host left the ramdisk, its agent token is revoked
    assert await http_status(left_behind.url) == 403

    # deprovision: clean the disk, power off, back to available
    await operations.deprovision(client, host.ref)
    st = await wait_status(client, host.ref, lambda s: s.provisioning.state == S.AVAILABLE or s.error_type)
    assert st.error_type is None, st.error_message
    assert st.provisioning.image is None
    with emu.disk_path.open("rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20), "the partition table area was not wiped"
    assert emu.boots[-1].target == "Pxe", "deprovisioning must boot the ramdisk, not the OS"
    assert not on_boot_server(dc, left_behind.url)
    await assert_no_bmc_password(client, dc, host.ref, at_least=6)
    await record(client, host.ref.workflow_id, "provision-deprovision")


async def test_missing_secret_fails_registration_and_bad_update_is_rejected(
    client: Client, settings: Settings, dc: Datacenter, tmp_path: Path
) -> None:
    missing = SecretRef(name="nope", namespace=dc.namespace, path=str(tmp_path / "missing.yaml"))
    host = dc.host(1, bmc=BMCDetails(address=dc.host(1).spec.bmc.address, credentials=missing))
    await operations.apply(client, host, settings)
    st = await wait_status(client, host.ref, lambda s: s.error_type is not None)
    assert st.error_type == ErrorType.REGISTRATION
    assert st.operational_status == OperationalStatus.ERROR
    assert "missing.yaml" in st.error_message and "SecretNotFound" in st.error_message
    assert st.error_count == 1
    assert st.provisioning.state == S.REGISTERING

    # a bad spec is rejected synchronously, with the field named; the host is untouched
    bad = host.spec.model_copy(update={"bmc": BMCDetails(address="gopher://x", credentials=missing)})
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await operations.handle_for(client, host.ref).execute_update("update_spec", bad)
    assert "spec.bmc.address" in str(err.value.cause) and "gopher" in str(err.value.cause)
    assert await operations.spec(client, host.ref) == host.spec
    assert (await operations.status(client, host.ref)).error_count == 1

    # fixing the credentials through a valid update recovers the host without waiting for backoff
    fixed = host.spec.model_copy(update={"bmc": dc.host(1).spec.bmc, "image": None})
    await operations.handle_for(client, host.ref).execute_update("update_spec", fixed)
    st = await wait_status(client, host.ref, lambda s: s.provisioning.state != S.REGISTERING)
    assert st.error_type is None and st.good_credentials.credentials == dc.credentials
    await assert_no_bmc_password(client, dc, host.ref, at_least=2)
    await record(client, host.ref.workflow_id, "registration-error-fixed")


async def test_virtual_media_host_boots_the_deploy_iso_instead_of_pxe(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    pxe = dc.host(1)
    address = pxe.spec.bmc.address.replace("redfish+http://", "redfish-virtualmedia+http://")
    host = dc.host(
        1,
        bmc=BMCDetails(address=address, credentials=dc.credentials),
        boot_mac_address=None,
        preprovisioning_network_data_name="preprov-net",
    )
    # the network data the host's own ISO carries (tests/test_vmedia.py reads such ISOs): a Secret
    # where the CLI keeps a hostfile's, <state_dir>/secrets/<namespace>/<name>.yaml
    dns_marker = f"198.51.100.{uuid.uuid4().int % 200 + 20}"
    network_data = {
        "links": [{"id": "nic0", "ethernet_mac_address": emu_mac(dc, 1)}],
        "networks": [{"id": "n0", "link": "nic0", "type": "ipv4", "ip_address": "192.0.2.77/24"}],
        "services": [{"type": "dns", "address": dns_marker}],
    }
    secret = settings.state_dir / "secrets" / host.ref.namespace / "preprov-net.yaml"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(json.dumps({"networkData": json.dumps(network_data)}))
    await operations.apply(client, host, settings)
    st = await wait_status(client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type)
    assert st.error_type is None, st.error_message
    emu = dc.emulated[1]
    assert emu.boots[0].target == "Cd" and emu.boots[0].agent, "the ramdisk came from virtual media"
    assert emu.boots[-1].target == "Hdd"
    assert not (settings.boot_dir / "dnsmasq" / "hosts" / host.ref.host_id).exists(), "no DHCP entry needed"
    media = await asyncio.to_thread(
        lambda: requests.get(emu.system_url + "/VirtualMedia/Cd", auth=("admin", dc.password)).json()
    )
    assert not media["Inserted"], "the deploy ISO is ejected after deploy"
    host_isos = settings.boot_dir / "images" / "vmedia" / host.ref.host_id
    assert not host_isos.exists(), "the host's ISO is deleted after deploy"

    # deprovision: the ramdisk boots from a new ISO of the host's, which is deleted and ejected after
    await operations.deprovision(client, host.ref)
    st = await wait_status(client, host.ref, lambda s: s.provisioning.state == S.AVAILABLE or s.error_type)
    assert st.error_type is None, st.error_message
    assert emu.boots[-1].target == "Cd" and emu.boots[-1].agent, "deprovisioning booted the ramdisk's ISO"
    media = await asyncio.to_thread(
        lambda: requests.get(emu.system_url + "/VirtualMedia/Cd", auth=("admin", dc.password)).json()
    )
    assert not media["Inserted"], "the deploy ISO is ejected after deprovisioning"
    assert not host_isos.exists(), "the host's ISO is deleted after deprovisioning"
    await assert_no_bmc_password(client, dc, host.ref, at_least=5)
    await assert_no_secret_in_histories(client, [dns_marker], host.ref.workflow_id, at_least=6)
    await record(client, host.ref.workflow_id, "vmedia-deprovision")
