"""A real OS deployed by metalflow consumes the config drive: checked from outside the VM.

Part of `make e2e` (marker `realos`: `make e2e-realos` runs the real OS's tests alone).

The VM has disks like a server's: a virtio disk, a spinning SATA disk behind AHCI and an NVMe
disk (QEMU devices), each holding a previous tenant's data. In order, on one VM:
1. rootDeviceHints that match no disk: a preparation error after inspection, every disk untouched;
2. hints fixed (the NVMe disk's serial: not the first disk), networkData naming a MAC the VM lacks:
   cleaning erases every disk (spec.erase: NVMe Format on the NVMe disk, overwrite on the others,
   each read back), then a provisioning error before the image is written;
3. networkData fixed: the OS lands on the NVMe disk and boots from it;
4. deprovisioning asking for ATA secure erase, which QEMU's AHCI disk lacks: refused before any
   disk is erased, the OS still on the NVMe disk;
5. erase asked as before: deprovisioned (every disk erased again); then the same OS as a raw
   image (streamed to the disk; step 3's was qcow2) is provisioned on a software RAID-1 over the
   SATA and NVMe disks (spec.raid.softwareRAIDVolumes with physicalDisks: mdadm in the agent, the
   image on the md array, its ESP copied to both disks) and boots with its root on the array.

The VM, defined SeaBIOS, is switched to UEFI (OVMF) by its Redfish BMC for `bootMode: UEFI`
(tests/e2e/test_os_image.py boots the same image by BIOS); it PXE-boots the deploy ramdisk;
`metalflow provision --wait` (Redfish BMC) writes the Debian OS image (testbed/os_image.py:
GRUB, Debian's kernel, cloud-init with the ConfigDrive datasource only) and the config drive (a
config-2 partition after the image's); the VM then boots the OS from its disk, and cloud-init,
from the drive alone:
- runs the userData (`#cloud-config`): a per-run marker on the serial console, and phone_home to a
  loopback HTTP server of this test (reached at the namespace's address through the bed's
  forwarder, testbed/nsforward.py);
- sets the hostname and instance id from metaData (both in the phone-home request);
- applies networkData (OpenStack network_data.json, as metal3 passes it): an active-backup bond
  over the VM's two NICs with a static IPv4 address (no DHCP in the OS: the phone home itself
  proves the address works), a route and a DNS server, and a VLAN on the bond with an address of
  its own; the test reaches the bond's address from the bed's namespace (ping) and sees the VLAN's
  frames on the bed's bridge tagged with its id and carrying its address (tcpdump: this machine's
  kernel has no 802.1Q interfaces to answer them), and the userData prints the route, the DNS
  server, the bond's two members and the VLAN on the console.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client

from activities.kubeadm import render_user_data
from metalflow.api.erase import EraseMethod
from metalflow.api.models import HostRef, HostStatus, JoinSpec, SecretRef, Taint
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.client.hostfile import load_hosts
from metalflow.runtime.settings import Settings
from testbed.debian_image import missing_tools
from testbed.os_image import OSImage, os_image
from testbed.vm import NET_ADDRESS, OVMF_CODE, Domain, VMTestBed, ramdisk_boot_budget
from worker.control import build_worker

BUDGET = ramdisk_boot_budget() + 600  # seconds to provisioned: the OS image is about 1.4 GB
OS_BUDGET = 1500  # seconds from provisioned to cloud-init's phone home (815 s seen at load 13)
pytestmark = [pytest.mark.e2e, pytest.mark.realos, pytest.mark.timeout(BUDGET + OS_BUDGET + 600)]


@pytest.fixture(scope="module")
def real_os() -> OSImage:
    missing = missing_tools() + [t for t in ("sfdisk", "mke2fs", "mcopy") if not shutil.which(t)]
    if missing:
        pytest.skip("cannot build the OS image here; missing: " + ", ".join(missing))
    return os_image()


class PhoneHome:
    """A loopback HTTP server that records cloud-init's phone_home POSTs."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, list[str]]]] = []
        seen = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                seen.append((self.path, urllib.parse.parse_qs(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PhoneHome:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def phone_home() -> Iterator[PhoneHome]:
    with PhoneHome() as server:
        yield server


STATIC_IP = "192.0.2.20"  # inside the bed's namespace only, below dnsmasq's range (.50-.99)
ROUTE_NET = "198.51.100.0"  # TEST-NET-2: a route to it via the namespace's address; never used
# spec.erase: auto over these (NVMe Format, not crypto erase, on the NVMe disk)
ERASE = {"allowedMethods": ["nvmeFormat", "ataSecureErase", "overwrite"]}
VLAN_ID = 100  # a tagged network on the bond, seen on the bed's bridge
VLAN_IP, VLAN_NS_IP = "203.0.113.20", "203.0.113.1"  # TEST-NET-3


def network_data(macs: list[str]) -> dict[str, Any]:
    """OpenStack network_data.json, the shape metal3's networkData Secret carries: an
    active-backup bond over the VM's two NICs with a static address, a route and DNS, and a VLAN
    on the bond with an address of its own."""
    return {
        "links": [
            {"id": "nic0", "type": "phy", "ethernet_mac_address": macs[0], "mtu": 1500},
            {"id": "nic1", "type": "phy", "ethernet_mac_address": macs[1], "mtu": 1500},
            {
                "id": "bond0",
                "type": "bond",
                "bond_links": ["nic0", "nic1"],
                "bond_mode": "active-backup",
                "bond_miimon": 100,
                "ethernet_mac_address": macs[0],
                "mtu": 1500,
            },
            {
                "id": "tenant",
                "type": "vlan",
                "vlan_link": "bond0",
                "vlan_id": VLAN_ID,
                "vlan_mac_address": macs[0],
            },
        ],
        "networks": [
            {
                "id": "provisioning",
                "type": "ipv4",
                "link": "bond0",
                "ip_address": STATIC_IP,
                "netmask": "255.255.255.0",
                "routes": [{"network": ROUTE_NET, "netmask": "255.255.255.0", "gateway": NET_ADDRESS}],
                "network_id": "provisioning",
            },
            {
                "id": "tenant-net",
                "type": "ipv4",
                "link": "tenant",
                "ip_address": VLAN_IP,
                "netmask": "255.255.255.0",
                "network_id": "tenant",
            },
        ],
        "services": [{"type": "dns", "address": NET_ADDRESS}],
    }


def join_user_data() -> dict[str, str]:
    """What metalflow's join step would give cloud-init (activities/kubeadm.py), a worker's and a
    control plane's, each merged with an operator's own #cloud-config; and one planted invalid
    document (runcmd must be a list), which `cloud-init schema` must refuse: the check can fail."""
    ref = HostRef(namespace="e2e", name="vm-realos")
    join = JoinSpec(kubeconfig=SecretRef(name="target-kubeconfig"), node_labels={"role": "worker"})
    own = "#cloud-config\nruncmd:\n  - [echo, hello]\nssh_authorized_keys: [ssh-ed25519 AAAAC3Nz]\n"
    token, ca_hash = "abcdef.0123456789abcdef", "sha256:" + "ab" * 32
    taints = [Taint(key="metal3.io/role", value="gpu", effect="NoSchedule")]
    cp = join.model_copy(update={"control_plane": True})
    return {
        "worker": render_user_data(ref, join, "https://192.0.2.1:6443", token, ca_hash, own, taints=taints),
        "control-plane": render_user_data(ref, cp, "https://192.0.2.1:6443", token, ca_hash, None, "c0ffee"),
        "planted-invalid": "#cloud-config\nruncmd: 5\n",
    }


def schema_commands(docs: dict[str, str]) -> tuple[list[dict[str, Any]], list[str]]:
    """write_files entries and runcmd lines: `cloud-init schema` of each document inside the OS,
    its exit status and output on the serial console."""
    files = [
        {"path": f"/run/metalflow-join/{name}.yaml", "encoding": "b64", "permissions": "0600",
         "content": base64.b64encode(text.encode()).decode()}
        for name, text in docs.items()
    ]  # fmt: skip
    cmds = [
        f"out=$(cloud-init schema --config-file /run/metalflow-join/{name}.yaml 2>&1); "
        f"echo \"join-schema {name} rc=$? $(echo $out | tr -s '\\n' ' ')\" > /dev/ttyS0"
        for name in docs
    ]
    return files, cmds


def host_docs(
    tb: VMTestBed, name: str, macs: list[str], bmc: str, ns: str, marker: str, phone_url: str, iid: str
) -> list[dict[str, Any]]:
    schema_files, schema_cmds = schema_commands(join_user_data())
    user_data = {
        "write_files": schema_files,
        "runcmd": [
            *schema_cmds,
            f'echo "{marker} hostname=$(hostname) instance=$(cat /var/lib/cloud/data/instance-id)'
            f' route=$(ip -4 route show {ROUTE_NET}/24 | tr -s " " _)'
            " dns=$(cat /run/systemd/network/*.network /etc/systemd/network/*.network 2>/dev/null"
            " | grep -m1 ^DNS=)"
            ' bond=$(grep -c "^Slave Interface" /proc/net/bonding/bond0)'
            f' vlan=$(ip -d link show | grep -c "vlan protocol 802.1Q id {VLAN_ID} ")" > /dev/ttyS0',
            # traffic on the VLAN for the test to see on the wire (nothing answers it there)
            # where the root file system is, and the md arrays (step 5 boots from one)
            f'echo "{marker}-root $(findmnt -no SOURCE /) $(grep ^md /proc/mdstat)" > /dev/ttyS0',
            f"nohup sh -c 'for i in $(seq 600); do ping -c1 -W1 -I bond0.{VLAN_ID} {VLAN_NS_IP}; done'"
            " >/dev/null 2>&1 &",
        ],
        "phone_home": {
            "url": phone_url + "/phone-home/$INSTANCE_ID",
            "post": ["hostname", "instance_id"],
            "tries": 20,
        },
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
            "stringData": {"userData": "#cloud-config\n" + yaml.safe_dump(user_data)},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "meta-data", "namespace": ns},
            "stringData": {"metaData": json.dumps({"uuid": iid, "hostname": f"{name}-os"})},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "network-data", "namespace": ns},
            "stringData": {"networkData": json.dumps(network_data(macs))},
        },
        {
            "apiVersion": "metal3.io/v1alpha1",
            "kind": "BareMetalHost",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "online": True,
                "bootMACAddress": macs[0],
                "bootMode": "UEFI",  # the image boots from its ESP (GRUB EFI)
                "bmc": {"address": bmc, "credentialsName": "bmc"},
                "rootDeviceHints": {"serialNumber": "set by the caller"},
                "erase": dict(ERASE),
                "image": {
                    "url": f"http://{NET_ADDRESS}:{tb.boot_port}/images/realos.qcow2",
                    "checksum": "",  # set by the caller
                    "checksumType": "sha256",
                    "format": "qcow2",  # the agent converts it onto the disk (qemu-img)
                },
                "userData": {"name": "user-data", "namespace": ns},
                "metaData": {"name": "meta-data", "namespace": ns},
                "networkData": {"name": "network-data", "namespace": ns},
            },
        },
    ]


MIB = 1 << 20
SMALL = 512 * MIB  # the virtio disk: erased by overwrite inside the TCG VM
SATA = 2 << 30  # a software RAID-1 member in step 5: a 512 MiB ESP and the 1.2 GB image on the array
NVME = 4 << 30  # the OS disk
CUSTOMER = b"a previous tenant's data " * 160


def disk_files(dom: Domain) -> dict[str, tuple[Path, int]]:
    return {
        "/dev/vda": (dom.disk, dom.disk_bytes),
        "/dev/sda": (dom.extra_disks[0].path, dom.extra_disks[0].size_bytes),
        "/dev/nvme0n1": (dom.extra_disks[1].path, dom.extra_disks[1].size_bytes),
    }


def seed_offsets(size: int) -> list[int]:
    return [0, size // 2 + 4099, size - 2 * MIB]  # both ends (past the config drive) and the middle


def seed(dom: Domain) -> None:
    for path, size in disk_files(dom).values():
        with path.open("r+b") as f:
            for off in seed_offsets(size):
                f.seek(off)
                f.write(CUSTOMER)


def seeds_left(dom: Domain) -> dict[str, list[bool]]:
    out = {}
    for name, (path, size) in disk_files(dom).items():
        with path.open("rb") as f:
            found = []
            for off in seed_offsets(size):
                f.seek(off)
                found.append(f.read(len(CUSTOMER)) == CUSTOMER)
            out[name] = found
    return out


def has_gpt(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(512)
        return f.read(8) == b"EFI PART"


async def wait_status(client: Client, ref: HostRef, pred: Any, timeout: float, dom: Domain) -> HostStatus:
    """Poll the status query until `pred` holds (a condition with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        st = await operations.status(client, ref)
        if pred(st):
            return st
        assert time.monotonic() < deadline, (
            f"not reached in {timeout:.0f}s: {st.model_dump_json(exclude={'hardware'})}\n"
            + dom.console()[-3000:]
        )
        await asyncio.sleep(1)


async def test_metalflow_deploys_the_real_os_and_cloud_init_consumes_the_config_drive(
    client: Client,
    bed: tuple[VMTestBed, Settings],
    tmp_path: Path,
    ns: str,
    real_os: OSImage,
    phone_home: PhoneHome,
) -> None:
    tb, _ = bed
    settings = Settings()
    served = tb.boot_dir / "images" / "realos.qcow2"  # 277 MiB for 1136 MiB of disk
    subprocess.run(["cp", str(real_os.qcow2), str(served)], check=True)
    phone_url = "http://" + await asyncio.to_thread(tb.forward, phone_home.port)
    marker = f"METALFLOW-REALOS-{uuid.uuid4().hex[:8]}"
    iid = f"iid-{marker.lower()}"
    dom = await asyncio.to_thread(
        tb.add_domain,
        "vm-realos",
        SMALL,
        extra_disks=[("sata", SATA, True), ("nvme", NVME, False)],
        nics=2,
        memory_mib=2048,  # the qcow2 is spooled in the ramdisk's RAM before conversion (not raw)
    )
    seed(dom)
    sata, nvme = dom.extra_disks
    macs = [dom.mac, *dom.extra_macs]
    docs = host_docs(tb, dom.name, macs, tb.redfish_address(dom), ns, marker, phone_url, iid)
    bmh = docs[-1]["spec"]
    bmh["image"]["checksum"] = real_os.qcow2_sha256
    bmh["rootDeviceHints"] = {"serialNumber": "NO-SUCH-DISK"}

    async def apply() -> HostRef:
        hostfile = tmp_path / "hosts.yaml"
        hostfile.write_text(yaml.safe_dump_all(docs))
        [host] = await asyncio.to_thread(load_hosts, hostfile, tmp_path / "secrets")
        await operations.apply(client, host, settings)
        return host.ref

    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(client, settings, executor):
            started = time.monotonic()
            # 1. hints that match no disk: stopped after inspection, before cleaning touched a disk
            ref = await apply()
            st = await wait_status(client, ref, lambda s: s.error_type is not None, BUDGET, dom)
            assert st.provisioning.state == S.PREPARING and "NoRootDeviceMatch" in st.error_message, st
            assert "spec.rootDeviceHints: no disk matches" in st.error_message
            assert seeds_left(dom) == {d: [True, True, True] for d in disk_files(dom)}
            assert st.hardware is not None
            disks = {d.name: d for d in st.hardware.storage}
            assert disks.keys() == {"/dev/vda", "/dev/sda", "/dev/nvme0n1"}, disks
            assert (disks["/dev/vda"].serial_number, disks["/dev/vda"].size_bytes) == (dom.disk_serial, SMALL)
            assert (disks["/dev/sda"].serial_number, disks["/dev/sda"].size_bytes) == (sata.serial, SATA)
            assert disks["/dev/sda"].rotational and disks["/dev/sda"].type == "HDD"
            # virtio-blk says nothing of rotation, and Linux then counts a disk as rotational
            assert disks["/dev/vda"].rotational and disks["/dev/vda"].type == "HDD"
            assert (disks["/dev/nvme0n1"].serial_number, disks["/dev/nvme0n1"].type) == (nvme.serial, "NVME")
            assert disks["/dev/nvme0n1"].size_bytes == NVME
            print(
                f"\n{dom.name}: 1. bad hints refused at {time.monotonic() - started:.0f}s: {st.error_message}"
            )

            # 2. hints fixed, networkData with a MAC the VM lacks: erased, then stopped before the write
            bmh["rootDeviceHints"] = {"serialNumber": nvme.serial}
            good_net = docs[-2]["stringData"]["networkData"]
            docs[-2]["stringData"]["networkData"] = json.dumps(network_data(["52:54:00:fe:fe:fe", macs[1]]))
            await apply()
            st = await wait_status(
                client, ref, lambda s: "NetworkDataUnknownMAC" in s.error_message, BUDGET, dom
            )
            assert st.provisioning.state == S.PROVISIONING, st
            assert dom.mac in st.error_message and "52:54:00:fe:fe:fe" not in st.error_message
            erased = {r.device: r for r in st.erasure}
            assert erased.keys() == {"/dev/vda", "/dev/sda", "/dev/nvme0n1"}, st.erasure
            assert (erased["/dev/nvme0n1"].method, erased["/dev/nvme0n1"].verified) == (
                EraseMethod.NVME_FORMAT,
                "blank",
            )
            for name in ("/dev/vda", "/dev/sda"):
                assert (erased[name].method, erased[name].verified) == (EraseMethod.OVERWRITE, "zeroes")
            assert erased["/dev/nvme0n1"].serial == nvme.serial and all(r.samples >= 64 for r in st.erasure)
            assert seeds_left(dom) == {d: [False, False, False] for d in disk_files(dom)}
            assert not has_gpt(nvme.path), "the image was written although networkData was wrong"
            print(
                f"{dom.name}: 2. erased and bad networkData refused at {time.monotonic() - started:.0f}s: "
                + ", ".join(f"{r.device} {r.method.value} {r.seconds:.0f}s" for r in st.erasure)
            )

            # 3. networkData fixed: the OS goes to the NVMe disk and boots from it
            docs[-2]["stringData"]["networkData"] = good_net
            await apply()
            st = await wait_status(client, ref, lambda s: s.provisioning.state == S.PROVISIONED, BUDGET, dom)
            provisioned = time.monotonic() - started
            deadline = time.monotonic() + OS_BUDGET
            while not (phone_home.posts and f"{marker} hostname=" in dom.console()):
                assert time.monotonic() < deadline, (
                    f"no phone home / marker in {OS_BUDGET}s: {phone_home.posts}\n{dom.console()[-4000:]}"
                )
                await asyncio.sleep(2)
            booted = time.monotonic() - started
            print(
                f"{dom.name}: 3. provisioned at {provisioned:.0f}s, cloud-init phoned home at {booted:.0f}s"
                f" ({tb.accel})"
            )
            console = dom.console()
            # the bond's static address answers from the namespace; the VLAN's frames reach the
            # namespace's bridge tagged with its id (this machine's kernel has no 802.1Q interface
            # to answer them: tcpdump sees the tag and the VLAN's address in the ARP the OS sends)
            ping = await asyncio.to_thread(
                subprocess.run,
                tb.ns.exec_argv("ping", "-c", "3", "-W", "5", STATIC_IP),
                capture_output=True,
                text=True,
            )
            assert ping.returncode == 0, f"{ping.stdout}{ping.stderr}\n{console[-3000:]}"
            tagged = await asyncio.to_thread(
                subprocess.run,
                tb.ns.exec_argv(
                    "timeout",
                    "60",
                    "tcpdump",
                    "-i",
                    tb.ns.bridge,
                    "-c",
                    "1",
                    "-nn",
                    "-e",
                    f"vlan {VLAN_ID} and arp",
                ),
                capture_output=True,
                text=True,
            )
            assert tagged.returncode == 0, tagged.stdout + tagged.stderr
            assert f"vlan {VLAN_ID}," in tagged.stdout and f"tell {VLAN_IP}" in tagged.stdout, tagged.stdout
            # 4. deprovisioning with ATA secure erase, which the AHCI disk lacks: refused, nothing erased
            bmh.pop("image")
            bmh["erase"] = {"method": "ataSecureErase"}
            await apply()
            st = await wait_status(client, ref, lambda s: s.error_type is not None, BUDGET, dom)
            assert (
                "EraseMethodUnsupported" in st.error_message and "Nothing was erased" in st.error_message
            ), st
            assert f"/dev/sda (serial {sata.serial}, sata)" in st.error_message
            assert "does not support the ATA security feature set" in st.error_message
            assert has_gpt(nvme.path), "the OS disk was touched"
            print(
                f"{dom.name}: 4. ATA secure erase refused at {time.monotonic() - started:.0f}s: "
                + st.error_message
            )

            # 5. erase asked as before: deprovisioned (every disk erased again), then the raw image on
            # a software RAID-1 over the SATA and NVMe disks
            bmh["erase"] = dict(ERASE)
            await apply()
            st = await wait_status(client, ref, lambda s: s.provisioning.state == S.AVAILABLE, BUDGET, dom)
            assert st.error_type is None and len(st.erasure) == 3, st
            assert not has_gpt(nvme.path), "deprovisioning left the OS on the NVMe disk"
            raw = tb.boot_dir / "images" / "realos.raw"
            subprocess.run(["cp", "--sparse=always", str(real_os.raw), str(raw)], check=True)
            bmh["image"] = {
                "url": f"http://{NET_ADDRESS}:{tb.boot_port}/images/realos.raw",
                "checksum": real_os.raw_sha256,
                "checksumType": "sha256",
                "format": "raw",  # streamed to the disk as it arrives
            }
            bmh.pop("rootDeviceHints")  # the image goes to the array
            bmh["raid"] = {
                "softwareRAIDVolumes": [
                    {
                        "level": "1",
                        "physicalDisks": [{"serialNumber": sata.serial}, {"serialNumber": nvme.serial}],
                    }
                ]
            }
            await apply()
            await wait_status(client, ref, lambda s: s.provisioning.state == S.PROVISIONED, BUDGET, dom)
            deadline = time.monotonic() + OS_BUDGET
            while len(phone_home.posts) < 2 or dom.console().count(f"{marker} hostname=") < 2:
                assert time.monotonic() < deadline, f"the raw OS never phoned home\n{dom.console()[-4000:]}"
                await asyncio.sleep(2)
            booted_raw = time.monotonic() - started
            raid_root = [ln for ln in dom.console().splitlines() if ln.startswith(f"{marker}-root ")][-1]
            print(
                f"{dom.name}: 5. deprovisioned, then the raw image booted from software RAID at "
                f"{booted_raw:.0f}s: {raid_root}"
            )

    line = next(ln for ln in console.splitlines() if ln.startswith(marker))
    assert f"hostname={dom.name}-os" in line and f"instance={iid}" in line, line
    path, form = phone_home.posts[0]
    assert path == f"/phone-home/{iid}"
    assert form.get("hostname") == [f"{dom.name}-os"] and form.get("instance_id") == [iid], form
    assert "config drive written to /dev/nvme0n1" in console
    assert "erasing /dev/nvme0n1 with nvmeFormat" in console or "erased /dev/nvme0n1" in tb_agent_log(
        tb, ns, dom
    )
    loader = ET.fromstring(dom.virsh("dumpxml", "--inactive", dom.name).stdout).find("os/loader")
    assert loader is not None and (loader.text or "").strip() == str(OVMF_CODE), "not booted by OVMF"
    # metalflow's join userData (worker, control plane) passes `cloud-init schema` in the real OS;
    # the planted invalid document is refused there, so the check is live
    schema = dict(re.findall(r"join-schema (\S+) (rc=\d+.*)", console))
    assert schema.keys() >= {"worker", "control-plane", "planted-invalid"}, console[-4000:]
    assert schema["worker"].startswith("rc=0 ") and schema["control-plane"].startswith("rc=0 "), schema
    assert not schema["planted-invalid"].startswith("rc=0 "), schema
    assert f"route={ROUTE_NET}/24_via_{NET_ADDRESS}" in line and f"dns=DNS={NET_ADDRESS}" in line, line
    assert " bond=2 " in line and line.rstrip().endswith(" vlan=1"), line
    # step 5: the root file system is on the md array, a RAID-1 over both disks' second partitions
    assert re.match(rf"{marker}-root /dev/md\d+p\d+ ", raid_root), raid_root
    assert "raid1" in raid_root and "sda2[" in raid_root and "nvme0n1p2[" in raid_root, raid_root
    agent_log = tb_agent_log(tb, ns, dom)
    assert re.search(r"software RAID /dev/md\d+: level 1 over /dev/nvme0n1p2, /dev/sda2 \(built\)", agent_log)
    assert "ESP (" in agent_log and "copied to /dev/sda, /dev/nvme0n1" in agent_log, agent_log[-3000:]


def tb_agent_log(tb: VMTestBed, ns: str, dom: Domain) -> str:
    """Every agent log the boot server kept for the host."""
    host_dir = tb.boot_dir / "agent-logs" / HostRef(namespace=ns, name=dom.name).host_id
    return "\n".join(p.read_text() for p in sorted(host_dir.glob("*.log")))
