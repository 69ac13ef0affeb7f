"""Real end to end: QEMU VMs are the bare-metal servers, network-booted and provisioned.

Redfish (sushy-emulator's libvirt driver) or IPMI (virtualbmc) powers and boot-selects each VM;
its firmware network-boots through our dnsmasq config and iPXE script into the deploy ramdisk,
whose agent is a Temporal worker on the host's queue; the agent inventories the VM's real virtio
NIC and disk, cleans, writes a bootable image (checksum verified) and the config drive; the VM
then boots the written disk and prints the image's marker on its serial console. Three ways in:
UEFI (OVMF) + PXE over Redfish, UEFI HTTP boot over Redfish, legacy BIOS (SeaBIOS) + PXE over IPMI.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from history_scan import assert_no_secret_in_histories
from kubernetes import client as k8s
from temporalio.client import Client

from activities.boot.by_uuid import claim_path, script_path
from k8s_bridge.controller import Bridge
from metalflow.api.models import HostRef
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.bootable_image import esp_offset
from testbed.images import BuiltImage
from testbed.ramdisk import size_line as ramdisk_size_line
from testbed.registry import Layout, Registry, push
from testbed.vm import (
    IPXE_DIR,
    NET_ADDRESS,
    OVMF_CODE,
    ConsoleClock,
    Domain,
    VMTestBed,
    ramdisk_boot_budget,
)
from worker.control import build_worker

BUDGET = ramdisk_boot_budget() + 60  # seconds to provisioned
# vm_kernel first: without a kernel the test skips at once, before any server starts
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(BUDGET + 120), pytest.mark.usefixtures("vm_kernel")]
G, V, P = "metal3.io", "v1alpha1", "baremetalhosts"
AGENT_POLLING, OS_BOOTED = " polling host-", ": booted from the written disk"


def host_docs(
    tb: VMTestBed,
    dom: Domain,
    ns: str,
    image: BuiltImage,
    marker: str,
    bmc_address: str,
    oci_url: str = "",
    boot_mode: str = "legacy",
    with_mac: bool = True,
) -> list[dict[str, Any]]:
    """Secret (BMC), Secret (userData) and the BareMetalHost, as metal3 takes them; with `oci_url`
    the image comes from a registry (its checksum is the layer's digest, its format the annotation);
    without `with_mac` the host is enrolled with no bootMACAddress (found by its SMBIOS UUID)."""
    image_spec: dict[str, Any] = {
        "url": f"http://{NET_ADDRESS}:{tb.boot_port}/images/os.img",
        "checksum": image.sha256,
        "checksumType": "sha256",
        "format": "raw",
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bmc", "namespace": ns},
            "stringData": {"username": "admin", "password": tb.password},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "user-data", "namespace": ns},
            "stringData": {"userData": f"#cloud-config\nhostname: {dom.name}\n# {marker}\n"},
        },
        {
            "apiVersion": "metal3.io/v1alpha1",
            "kind": "BareMetalHost",
            "metadata": {"name": dom.name, "namespace": ns},
            "spec": {
                "online": True,
                **({"bootMACAddress": dom.mac} if with_mac else {}),
                "bootMode": boot_mode,  # UEFI: the Redfish BMC switches the domain to OVMF
                "bmc": {"address": bmc_address, "credentialsName": "bmc"},
                "rootDeviceHints": {"deviceName": "/dev/vda"},
                "image": {"url": oci_url} if oci_url else image_spec,
                "userData": {"name": "user-data", "namespace": ns},
            },
        },
    ]


async def wait_console(dom: Domain, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in dom.console():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{text!r} not on {dom.name}'s console in {timeout:.0f}s:\n{dom.console()[-3000:]}"
            )
        await asyncio.sleep(0.5)


def assert_booted_through_our_network(
    tb: VMTestBed, dom: Domain, ns: str, image_path: str = "/images/os.img", by_uuid: bool = False
) -> None:
    """The VM's iPXE asked our dnsmasq (user class iPXE, a known MAC) and was sent our per-host
    script; the kernel it then booted carries that script's arguments and its agent did the work.
    `by_uuid`: the VM was enrolled without a MAC, so dnsmasq did not know it and sent the generic
    URL that names the machine by its SMBIOS UUID; iPXE filled in the UUID the domain has."""
    log = (tb.workdir / "dnsmasq.log").read_text()
    if by_uuid:
        assert "user class: iPXE" in log, log[-2000:]
        assert f"bootfile-name  http://{NET_ADDRESS}:{tb.boot_port}/by-uuid/${{uuid}}" in log, log[-2000:]
        # registration recorded the UUID the domain's SMBIOS carries (Redfish UUID): the host's
        # claim on it outlives the boot script (removed by boot.cleanup once it boots its disk)
        claim = claim_path(tb.boot_dir, dom.uuid)
        assert claim.is_file() and claim.read_text().strip() == HostRef(namespace=ns, name=dom.name).host_id
        assert not script_path(tb.boot_dir, dom.uuid).exists(), "boot cleanup left the UUID's script"
    else:
        tags = [line for line in log.splitlines() if " tags: " in line]
        assert "user class: iPXE" in log and any("known" in t and "ipxe" in t for t in tags), log[-2000:]
        assert f"bootfile-name  http://{NET_ADDRESS}:{tb.boot_port}/boot/${{mac:hexhyp}}.ipxe" in log
    console = dom.console()
    assert f"BOOTIF=01-{dom.mac.replace(':', '-')}" in console
    assert f"metalflow: agent for {ns}.{dom.name} on {NET_ADDRESS}:" in console, console[-3000:]
    assert (
        image_path in console and " to /dev/vda" in console and "config drive written to /dev/vda" in console
    )


async def agent_steps(client: Client, workflow_id: str) -> list[str]:
    """The in-band activities the host's workflow and its children ran, in order."""
    steps = []
    runs = [wf async for wf in client.list_workflows(f'WorkflowId STARTS_WITH "{workflow_id}"')]
    for wf in sorted(runs, key=lambda wf: wf.start_time):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                if name.startswith("agent."):
                    steps.append(name)
    return steps


STEP_WORKFLOWS = ("RegisterHost", "InspectHost", "CleanHost", "DeployHost")


async def boot_timeline(
    client: Client, workflow_id: str
) -> tuple[list[float], dict[str, float], float | None]:
    """From the host's histories: when the BMC confirmed each power-on (epoch seconds), each step
    workflow's duration, and when the agent first took a task (it was polling)."""
    power_ons: list[float] = []
    steps: dict[str, float] = {}
    first_agent_task: float | None = None
    runs = [wf async for wf in client.list_workflows(f'WorkflowId STARTS_WITH "{workflow_id}"')]
    for wf in runs:
        if wf.workflow_type in STEP_WORKFLOWS and wf.close_time is not None:
            steps[wf.workflow_type] = (
                steps.get(wf.workflow_type, 0.0) + (wf.close_time - wf.start_time).total_seconds()
            )
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        scheduled: dict[int, tuple[str, bytes]] = {}
        for event in history.events:
            when = event.event_time.ToDatetime().timestamp()
            if event.HasField("activity_task_scheduled_event_attributes"):
                attrs = event.activity_task_scheduled_event_attributes
                data = attrs.input.payloads[0].data if attrs.input.payloads else b""
                scheduled[event.event_id] = (attrs.activity_type.name, data)
            elif event.HasField("activity_task_started_event_attributes"):
                name, _ = scheduled.get(
                    event.activity_task_started_event_attributes.scheduled_event_id, ("", b"")
                )
                if name.startswith("agent.") and (first_agent_task is None or when < first_agent_task):
                    first_agent_task = when
            elif event.HasField("activity_task_completed_event_attributes"):
                name, data = scheduled.get(
                    event.activity_task_completed_event_attributes.scheduled_event_id, ("", b"")
                )
                if name == "bmc.power" and json.loads(data or b"{}").get("action") in ("on", "reboot"):
                    power_ons.append(when)
    return sorted(power_ons), steps, first_agent_task


def print_vm_timings(
    tb: VMTestBed,
    dom: Domain,
    timeline: tuple[list[float], dict[str, float], float | None],
    clock: ConsoleClock,
) -> None:
    """Per VM: ramdisk size, power-on to agent polling, each step's time, power-on to OS booted."""
    power_ons, steps, first_task = timeline
    polling = clock.seen.get((dom.name, AGENT_POLLING))
    booted = clock.seen.get((dom.name, OS_BOOTED))
    # the kernel's own clock at the agent's first poll (the console is `quiet`: no kernel banner)
    up = re.search(r" polling host-\S+ on \S+ \(uptime ([0-9.]+)s\)", dom.console())
    kernel_to_polling = f"{float(up.group(1)):.0f}s (budget 30s)" if up else "n/a"
    size = ramdisk_size_line(tb.ramdisk) if tb.ramdisk else "9p developer loop ramdisk"

    def since_power_on(t: float | None, last: bool = False) -> str:
        before = [p for p in power_ons if t is not None and p <= t + 1]
        return f"{t - (before[-1] if last else before[0]):.0f}s" if t and before else "n/a"

    print(
        f"\n{dom.name}: {size}\n  power-on to agent polling {since_power_on(polling or first_task)}"
        f" (kernel start to polling {kernel_to_polling});"
        f" steps: {', '.join(f'{k} {v:.0f}s' for k, v in steps.items())};"
        f" power-on to OS booted {since_power_on(booted, last=True)} ({tb.accel})"
    )


def assert_agent_log_kept(tb: VMTestBed, dom: Domain, ns: str) -> None:
    """The agent streamed its log (and the init's) to the boot server, which kept it per boot."""
    host_dir = tb.boot_dir / "agent-logs" / HostRef(namespace=ns, name=dom.name).host_id
    logs = sorted(host_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)  # boot order
    assert logs, f"no agent log kept for {dom.name} under {host_dir}"
    text = "\n".join(p.read_text() for p in logs)
    # on failure: each boot's file (size, last lines) and the serial console's end, which shows
    # what the agent printed that never reached the boot server
    boots = "\n".join(f"{p.name} {p.stat().st_size} B: ...{p.read_text()[-800:]}" for p in logs)
    assert "config drive written to /dev/vda" in text, f"{boots}\n--- console:\n{dom.console()[-4000:]}"
    assert "init: " in text and "drivers loaded at" in text, text[:3000]
    assert tb.password not in text
    print(f"\n{dom.name}: agent log kept by the boot server: {', '.join(str(p) for p in logs)}")


def boots_from_disk_only(dom: Domain) -> bool:
    """The domain's persistent definition boots /dev/vda alone (Hdd, set after deploy)."""
    xml = ET.fromstring(dom.virsh("dumpxml", "--inactive", dom.name).stdout)
    os_boot = [b.get("dev") for b in xml.findall("os/boot")]
    disk_order = [d for d in xml.findall("devices/disk") if d.find("boot") is not None]
    nic_order = [i for i in xml.findall("devices/interface") if i.find("boot") is not None]
    return (os_boot == ["hd"] and not disk_order and not nic_order) or (
        not os_boot and len(disk_order) == 1 and not nic_order
    )


async def provision_with_cli(
    tb: VMTestBed,
    tmp_path: Path,
    ns: str,
    dom: Domain,
    image: BuiltImage,
    marker: str,
    scheme: str,
    with_mac: bool = True,
) -> float:
    """`metalflow provision hosts.yaml --wait` with a Redfish BMC (`scheme`: redfish+http for
    PXE, redfish-uefihttp+http for UEFI HTTP boot), boot mode UEFI; without `with_mac` the host is
    enrolled with no bootMACAddress (found by its SMBIOS UUID at first boot); seconds to
    provisioned."""
    path = tmp_path / f"hosts-{dom.name}.yaml"
    address = tb.redfish_address(dom).replace("redfish+http://", f"{scheme}://", 1)
    docs = host_docs(tb, dom, ns, image, marker, address, boot_mode="UEFI", with_mac=with_mac)
    path.write_text(yaml.safe_dump_all(docs))
    started = time.monotonic()
    argv = [sys.executable, "-m", "metalflow", "provision", str(path), "--wait", "--timeout", str(BUDGET)]
    done = await asyncio.to_thread(
        subprocess.run,
        [*argv, "--secrets-dir", str(tmp_path / f"secrets-{dom.name}")],
        capture_output=True,
        text=True,
        timeout=BUDGET + 30,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\nconsole:\n{dom.console()[-3000:]}"
    assert "provisioned" in done.stdout
    await wait_console(dom, f"{marker}: booted from the written disk", 120)
    return elapsed


# The BareMetalHost's namespace: not the CLI host's, so the two hosts hold separate provisioning
# limits and run side by side. "default" exists on every API server.
NS_BMH = "default"


async def provision_with_bmh(
    tb: VMTestBed, kube_api: k8s.ApiClient, dom: Domain, image: BuiltImage, marker: str, oci_url: str
) -> tuple[dict[str, Any], float]:
    """A BareMetalHost (and its Secrets) on the API server, BMC over IPMI (virtualbmc), its image
    an oci:// one; the bridge drives it. Returns the object once its status says provisioned, and
    the seconds it took."""
    bmc = await asyncio.to_thread(tb.ipmi_address, dom)
    docs = host_docs(tb, dom, NS_BMH, image, marker, bmc, oci_url=oci_url)
    co, core = k8s.CustomObjectsApi(kube_api), k8s.CoreV1Api(kube_api)
    for secret in docs[:2]:
        body = k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=secret["metadata"]["name"]), string_data=secret["stringData"]
        )
        await asyncio.to_thread(core.create_namespaced_secret, NS_BMH, body)
    started = time.monotonic()
    await asyncio.to_thread(co.create_namespaced_custom_object, G, V, NS_BMH, P, docs[2])

    retried: list[str] = []

    def provisioned() -> dict[str, Any] | None:
        obj: dict[str, Any] = co.get_namespaced_custom_object(G, V, NS_BMH, P, dom.name)
        status = obj.get("status", {})
        if status.get("errorType"):
            # an IPMI session lost to a loaded machine (UDP to virtualbmc) is the host workflow's
            # to retry with back-off, as metal3 does; any other error fails the test
            if "(BMCUnreachable)" not in status.get("errorMessage", ""):
                raise AssertionError(f"{status}\nconsole:\n{dom.console()[-3000:]}")
            if status["errorMessage"] not in retried:
                retried.append(status["errorMessage"])
                print(f"\n{dom.name}: retried after {status['errorType']}: {status['errorMessage']}")
        return obj if status.get("provisioning", {}).get("state") == "provisioned" else None

    deadline = time.monotonic() + BUDGET
    while (obj := await asyncio.to_thread(provisioned)) is None:
        assert time.monotonic() < deadline, f"not provisioned in {BUDGET}s:\n{dom.console()[-3000:]}"
        await asyncio.sleep(1)
    elapsed = time.monotonic() - started
    await wait_console(dom, f"{marker}: booted from the written disk", 120)
    return obj, elapsed


def loader_of(dom: Domain) -> tuple[str | None, str | None]:
    """The persistent definition's firmware: (<loader type>, <loader> path)."""
    loader = ET.fromstring(dom.virsh("dumpxml", "--inactive", dom.name).stdout).find("os/loader")
    return (None, None) if loader is None else (loader.get("type"), (loader.text or "").strip())


def assert_wrote_image(dom: Domain, image: BuiltImage) -> None:
    """The image's ESP is on the disk as written (the agent then rewrote the GPT around it: the
    backup header moves to the disk's end and a config-2 partition is added)."""
    start, end = esp_offset(), image.size - (1 << 20)
    with dom.disk.open("rb") as f, image.path.open("rb") as img:
        f.seek(start)
        img.seek(start)
        written, wanted = hashlib.sha256(f.read(end - start)), hashlib.sha256(img.read(end - start))
        assert written.hexdigest() == wanted.hexdigest(), f"{dom.name}: the image's ESP differs"


async def test_three_vms_uefi_pxe_uefi_http_and_bios_are_provisioned_via_cli_redfish_and_bmh_ipmi(
    client: Client,
    bed: tuple[VMTestBed, Settings],
    kube_api: k8s.ApiClient,
    bridge_api: k8s.ApiClient,
    tmp_path: Path,
    ns: str,
    marker_image: tuple[BuiltImage, str],
    registry: Registry,
) -> None:
    """Three servers at once: the CLI with a Redfish BMC (sushy-emulator's libvirt driver) and
    bootMode UEFI, one PXE-booted (the BMC switches its SeaBIOS domain to OVMF: bootMode reaches
    it) and one by UEFI HTTP boot (redfish-uefihttp://: the UefiHttp boot target, OVMF's own HTTP
    boot client), images over HTTP; and a BareMetalHost through the bridge with an IPMI BMC
    (virtualbmc), bootMode legacy on SeaBIOS, and an oci:// image from a loopback registry
    (docker-registry). All run the whole lifecycle at the same time, which also keeps the test
    within its time budget, and each boots its written disk in the mode it was provisioned in."""
    tb, _ = bed
    settings = Settings()  # the bed's settings plus the kubeconfig and status publishing
    image, marker = marker_image
    layout = Layout(tmp_path / "oci-layout")
    pushed = layout.manifest([(image.path.read_bytes(), "application/octet-stream")], disktype="raw")
    layout.tag("e2e", pushed)
    await asyncio.to_thread(push, layout, "e2e", registry, "metalflow/os")
    oci_url = f"oci://{registry.host}/metalflow/os:e2e"
    # UEFI VMs boot through the firmware's own NIC driver (as a server's firmware does), not
    # through QEMU's iPXE option ROM, so their firmware really fetches snponly.efi
    vm_redfish = await asyncio.to_thread(tb.add_domain, "vm-redfish", nic_rom=False)  # SeaBIOS until the BMC
    vm_http = await asyncio.to_thread(tb.add_domain, "vm-uefihttp", firmware="uefi", nic_rom=False)
    vm_ipmi = await asyncio.to_thread(tb.add_domain, "vm-ipmi")
    assert loader_of(vm_redfish) == (None, None) and loader_of(vm_http) == ("pflash", str(OVMF_CODE))
    ns_http = f"{ns}h"  # the second CLI host: its own namespace, so its local Secrets are its own
    bridge = Bridge(bridge_api, client, settings, resync_seconds=5)  # rbac.yaml's rights only
    vms = (vm_redfish, vm_http, vm_ipmi)
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(client, settings, executor):
            runner = asyncio.create_task(bridge.run())
            clock = ConsoleClock(list(vms), [AGENT_POLLING, OS_BOOTED])
            try:
                with clock:
                    cli_seconds, http_seconds, (obj, bmh_seconds) = await asyncio.gather(
                        provision_with_cli(
                            tb, tmp_path, ns, vm_redfish, image, marker, "redfish+http", with_mac=False
                        ),
                        provision_with_cli(
                            tb, tmp_path, ns_http, vm_http, image, marker, "redfish-uefihttp+http"
                        ),
                        provision_with_bmh(tb, kube_api, vm_ipmi, image, marker, oci_url),
                    )
            finally:
                bridge.stop()
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            st = await operations.status(client, HostRef(namespace=ns, name=vm_redfish.name))
            host_ns = {vm_redfish.name: ns, vm_http.name: ns_http, vm_ipmi.name: NS_BMH}
            steps = {vm.name: await agent_steps(client, f"host/{host_ns[vm.name]}/{vm.name}") for vm in vms}
            timelines = {
                vm.name: await boot_timeline(client, f"host/{host_ns[vm.name]}/{vm.name}") for vm in vms
            }
    print(
        f"\nprovisioned: {vm_redfish.name} (CLI, Redfish, UEFI PXE) in {cli_seconds:.0f}s, "
        f"{vm_http.name} (CLI, Redfish, UEFI HTTP boot) in {http_seconds:.0f}s, "
        f"{vm_ipmi.name} (BareMetalHost, IPMI, BIOS PXE) in {bmh_seconds:.0f}s, concurrently ({tb.accel})"
    )
    for vm in vms:
        print_vm_timings(tb, vm, timelines[vm.name], clock)

    for vm in vms:
        ran = steps[vm.name]
        for step in ("agent.inventory", "agent.clean", "agent.write_image", "agent.write_configdrive"):
            assert step in ran, f"{vm.name} never ran {step}: {ran}"
        assert (
            ran.index("agent.clean") < ran.index("agent.write_image") < ran.index("agent.write_configdrive")
        )
        assert boots_from_disk_only(vm), vm.virsh("dumpxml", "--inactive", vm.name).stdout
        if tb.ramdisk is not None:  # the self-contained ramdisk: nothing from this host is mounted
            domain_xml = ET.fromstring(vm.virsh("dumpxml", vm.name).stdout)
            assert domain_xml.findall("devices/filesystem") == [], "the VM shares a host directory"
            assert "metalflow: drivers loaded at" in vm.console() and "metalflow.9p" not in vm.console()
        assert_wrote_image(vm, image)
        with vm.disk.open("rb") as f:  # the config drive in the last 64 MiB
            f.seek(vm.disk_bytes - (64 << 20))
            assert marker.encode() in f.read(64 << 20)

    assert_agent_log_kept(tb, vm_redfish, ns)
    assert_agent_log_kept(tb, vm_http, ns_http)
    assert_agent_log_kept(tb, vm_ipmi, NS_BMH)

    dhcp = (tb.workdir / "dnsmasq.log").read_text()
    # UEFI + PXE: bootMode UEFI reached the BMC, which switched the domain from SeaBIOS to OVMF
    # (its NVRAM in the test bed's libvirt directory); OVMF's PXE client (arch 7) was sent
    # snponly.efi over TFTP from a root that holds it; the written disk booted from its ESP (GRUB)
    assert loader_of(vm_redfish) == ("pflash", str(OVMF_CODE)), vm_redfish.virsh(
        "dumpxml", vm_redfish.name
    ).stdout
    assert "PXEClient:Arch:00007" in dhcp and f"sent {IPXE_DIR}/snponly.efi to" in dhcp, dhcp[-3000:]
    console = vm_redfish.console()
    assert "Start PXE over IPv4" in console and "Welcome to GRUB" in console.split("drivers loaded at")[-1]
    # enrolled without a MAC: booted by its UUID, and its status shows the MAC inspection learnt
    # (the NIC that booted, metal3's nics[].pxe)
    assert_booted_through_our_network(tb, vm_redfish, ns, by_uuid=True)
    hw = st.hardware
    assert hw is not None
    assert [n.mac for n in hw.nics if n.pxe] == [vm_redfish.mac], hw.nics  # the VM's real virtio NIC
    assert st.system_uuid == vm_redfish.uuid
    assert any(d.name == "/dev/vda" and d.size_bytes == vm_redfish.disk_bytes for d in hw.storage), hw.storage
    assert st.provisioning.image is not None and st.provisioning.image.checksum == image.sha256

    # UEFI HTTP boot: OVMF made no PXE attempt, asked as HTTPClient (arch 16) and was given the
    # boot server's snponly.efi, which chained the host's iPXE script; the disk booted by GRUB
    console = vm_http.console()
    assert "Start HTTP Boot over IPv4" in console and "Start PXE over IPv4" not in console, console[-3000:]
    assert "HTTPClient:Arch:00016" in dhcp, dhcp[-3000:]
    assert f"bootfile-name  http://{NET_ADDRESS}:{tb.boot_port}/snponly.efi" in dhcp
    assert "Welcome to GRUB" in console.split("drivers loaded at")[-1]
    assert_booted_through_our_network(tb, vm_http, ns_http)
    assert loader_of(vm_http) == ("pflash", str(OVMF_CODE))

    # the BareMetalHost, IPMI-driven server: legacy BIOS throughout (SeaBIOS, its iPXE ROM, the
    # disk by syslinux); the same facts, read from the object's status; its image came from the
    # registry through the boot server, and the status names the manifest
    assert loader_of(vm_ipmi)[0] != "pflash"
    assert "SYSLINUX" in vm_ipmi.console().split("drivers loaded at")[-1]
    assert_booted_through_our_network(
        tb, vm_ipmi, NS_BMH, image_path=f"/oci/{HostRef(namespace=NS_BMH, name=vm_ipmi.name).host_id}/"
    )
    status = obj["status"]
    assert status["operationalStatus"] == "OK" and status["poweredOn"] is True
    assert [n["mac"] for n in status["hardware"]["nics"] if n.get("pxe")] == [vm_ipmi.mac]
    assert any(
        d["name"] == "/dev/vda" and d["sizeBytes"] == vm_ipmi.disk_bytes
        for d in status["hardware"]["storage"]
    )
    assert status["provisioning"]["image"]["url"] == oci_url
    assert status["provisioning"]["imageDigest"] == f"oci://{registry.host}/metalflow/os@{pushed['digest']}"
    assert tb.password not in str(obj)


VMEDIA_STATIC_ADDRESS = "192.0.2.150"  # on the boot network, outside dnsmasq's range
VMEDIA_DNS = "198.51.100.77"  # only in the network-data Secret: scanned for in the histories


async def boot_prepare_seconds(client: Client, workflow_id: str) -> list[float]:
    """How long each boot.prepare took (for a virtual-media host: making its ISO)."""
    took = []
    async for wf in client.list_workflows(f'WorkflowId STARTS_WITH "{workflow_id}"'):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        started: dict[int, float] = {}
        names: dict[int, str] = {}
        for event in history.events:
            when = event.event_time.ToDatetime().timestamp()
            if event.HasField("activity_task_scheduled_event_attributes"):
                names[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.HasField("activity_task_started_event_attributes"):
                started[event.activity_task_started_event_attributes.scheduled_event_id] = when
            elif event.HasField("activity_task_completed_event_attributes"):
                sched = event.activity_task_completed_event_attributes.scheduled_event_id
                if names.get(sched) == "boot.prepare" and sched in started:
                    took.append(when - started[sched])
    return took


async def test_vm_boots_its_own_virtual_media_iso_with_static_network_data_and_is_provisioned(
    client: Client,
    bed: tuple[VMTestBed, Settings],
    tmp_path: Path,
    ns: str,
    marker_image: tuple[BuiltImage, str],
) -> None:
    """A redfish-virtualmedia:// host: sushy-emulator's libvirt driver fetches the host's own ISO
    and attaches it as the domain's CD-ROM, which the VM boots in UEFI mode (the BMC switches the
    domain from SeaBIOS to OVMF, which starts the ISO's El Torito EFI image: GRUB). It has no
    bootMACAddress, so dnsmasq (which ignores unknown MACs) gives it no lease and nothing is
    PXE-booted: its ramdisk's address comes from its preprovisioning network data, on its ISO
    only. Inspected, cleaned, deployed, seen booting its written disk; the ISO ejected and
    deleted; the network data in no history."""
    tb, _ = bed
    settings = Settings()
    image, marker = marker_image
    dom = await asyncio.to_thread(tb.add_domain, "vm-vmedia")
    assert loader_of(dom) == (None, None)  # SeaBIOS until the BMC sets bootMode UEFI
    ref = HostRef(namespace=ns, name=dom.name)
    address = tb.redfish_address(dom).replace("redfish+http://", "redfish-virtualmedia+http://")
    docs = host_docs(tb, dom, ns, image, marker, address, boot_mode="UEFI")
    for doc in docs:
        doc["metadata"]["namespace"] = ns
    spec = docs[2]["spec"]
    del spec["bootMACAddress"]
    spec["preprovisioningNetworkDataName"] = "vm-vmedia-preprov"
    network_data = {
        "links": [{"id": "boot", "type": "phy", "ethernet_mac_address": dom.mac}],
        "networks": [
            {
                "id": "provisioning",
                "link": "boot",
                "type": "ipv4",
                "ip_address": VMEDIA_STATIC_ADDRESS,
                "netmask": "255.255.255.0",
                "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": NET_ADDRESS}],
            }
        ],
        "services": [{"type": "dns", "address": VMEDIA_DNS}],
    }
    docs.insert(
        2,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vm-vmedia-preprov", "namespace": ns},
            "stringData": {"networkData": json.dumps(network_data)},
        },
    )
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    argv = [sys.executable, "-m", "metalflow", "provision", str(path), "--wait", "--timeout", str(BUDGET)]
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(client, settings, executor):
            clock = ConsoleClock([dom], [AGENT_POLLING, OS_BOOTED])
            with clock:
                started = time.monotonic()
                # the CLI keeps the hostfile's Secrets under <state_dir>/secrets, where boot.prepare
                # finds the network data
                done = await asyncio.to_thread(
                    subprocess.run, argv, capture_output=True, text=True, timeout=BUDGET + 30
                )
                elapsed = time.monotonic() - started
                assert done.returncode == 0, (
                    f"{done.stdout}\n{done.stderr}\nconsole:\n{dom.console()[-3000:]}"
                )
                await wait_console(dom, f"{marker}: booted from the written disk", 120)
            ran = await agent_steps(client, ref.workflow_id)
            timeline = await boot_timeline(client, ref.workflow_id)
            prepares = await boot_prepare_seconds(client, ref.workflow_id)
            await assert_no_secret_in_histories(client, [VMEDIA_DNS], ref.workflow_id, at_least=4)
    base_iso = tb.boot_dir / "deploy.iso"
    print(
        f"\nprovisioned: {dom.name} (CLI, Redfish virtual media) in {elapsed:.0f}s ({tb.accel}); "
        f"deploy ISO {base_iso.stat().st_size / 2**20:.1f} MiB; boot.prepare (per-host ISO) "
        f"{', '.join(f'{s:.1f}s' for s in prepares)}"
    )
    print_vm_timings(tb, dom, timeline, clock)

    for step in ("agent.inventory", "agent.clean", "agent.write_image", "agent.write_configdrive"):
        assert step in ran, f"{dom.name} never ran {step}: {ran}"
    assert_agent_log_kept(tb, dom, ns)  # its ISO's command line names the log endpoint too
    console = dom.console()
    # the kernel came from its own ISO (the command line only that ISO carries) ...
    assert f"metalflow.host_id={ref.host_id} " in console and "metalflow.medium=iso" in console, console[
        -3000:
    ]
    assert "BOOTIF=" not in console, "no PXE: nothing names a boot NIC"
    # UEFI: the BMC switched the domain to OVMF before its first boot from the ISO (SeaBIOS before)
    assert loader_of(dom) == ("pflash", str(OVMF_CODE)), dom.virsh("dumpxml", "--inactive", dom.name).stdout
    # ... and its address from the ISO's network data, not DHCP (dnsmasq ignored the unknown MAC)
    assert "preprovisioning network data applied: static addresses on" in console, console[-3000:]
    assert f"{VMEDIA_STATIC_ADDRESS}/24" in console
    # (dnsmasq would answer it: the test bed boots MAC-less hosts by UUID, issue 21; the ramdisk
    # asked for no lease)
    assert "metalflow: dhcp " not in console.split("preprovisioning network data applied")[-1], console[
        -3000:
    ]
    # afterwards: ejected, deleted, and the domain boots its disk
    assert tb.cdrom_sources(dom) == [], "the ISO is ejected after deploy"
    host_isos = tb.boot_dir / "images" / "vmedia" / ref.host_id
    assert not host_isos.exists() or not list(host_isos.iterdir()), "the host's ISO is deleted after deploy"
    assert boots_from_disk_only(dom), dom.virsh("dumpxml", "--inactive", dom.name).stdout
    assert_wrote_image(dom, image)
