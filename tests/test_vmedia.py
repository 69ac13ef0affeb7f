"""Per-host virtual-media ISOs (issue 20, point 3): made by boot.prepare from the base deploy ISO.

A real base ISO is built by testbed/deploy_iso.py (isolinux, grub-mkstandalone, xorriso: the
same builder the ramdisk build runs) around a stand-in kernel and initrd; the activity runs for
real (ActivityEnvironment) and its ISOs are read back with xorriso and mtools: both El Torito
boot records, the host's own kernel command line in both boot loaders' files, nothing of
another host, the network data only where it was asked for; served by the real boot server at
an unguessable URL, replaced at the next boot, deleted by boot.cleanup. That a VM boots such
an ISO is tests/e2e/test_vm.py's virtual-media test; the workflow side (no network data in any
history, ISO deleted and ejected after deploy) is tests/test_lifecycle.py's virtual-media test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.boot import cleanup_boot, prepare_boot
from metalflow.api.bmc_address import BootMethod
from metalflow.api.boot import BootPrepareRequest, BootPurpose
from metalflow.api.models import HostRef
from metalflow.runtime.settings import Settings
from testbed.deploy_iso import build_base_iso, missing_packages
from testbed.processes import free_port
from worker.boot_server import start_boot_server

pytestmark = pytest.mark.skipif(
    bool(missing_packages()), reason=f"Debian packages missing: {missing_packages()} (scripts/system-deps.sh)"
)

RAMDISK = Path(__file__).resolve().parents[1] / "ramdisk"
HOST_A = HostRef(namespace="rack-1", name="server-a")
HOST_B = HostRef(namespace="rack-1", name="server-b")
MAC_A, MAC_B = "52:54:00:0a:00:01", "52:54:00:0b:00:02"
NETWORK_DATA = {
    "links": [{"id": "nic0", "type": "phy", "ethernet_mac_address": MAC_A.upper(), "mtu": 1500}],
    "networks": [
        {
            "id": "provisioning",
            "link": "nic0",
            "type": "ipv4",
            "ip_address": "198.51.100.23",
            "netmask": "255.255.255.0",
            "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "198.51.100.1"}],
        }
    ],
    "services": [{"type": "dns", "address": "198.51.100.53"}],
}


@pytest.fixture(scope="module")
def base_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base deploy ISO around a stand-in kernel and initrd (random bytes: nothing boots them here)."""
    d = tmp_path_factory.mktemp("base")
    (d / "vmlinuz").write_bytes(b"KERNEL" + uuid.uuid4().bytes * 4096)
    (d / "initrd.img").write_bytes(b"INITRD" + uuid.uuid4().bytes * 8192)
    return build_base_iso(d / "vmlinuz", d / "initrd.img", d / "deploy.iso", "console=ttyS0,115200n8")


@pytest.fixture
def vm_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_iso: Path) -> Settings:
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(tmp_path / "boot"))
    monkeypatch.setenv("METALFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_URL", "http://192.0.2.1:8088")
    monkeypatch.setenv("METALFLOW_AGENT_TEMPORAL_ADDRESS", "192.0.2.1:7233")
    monkeypatch.setenv("METALFLOW_DEPLOY_ISO", str(base_iso))
    return Settings()


def request(host: HostRef, mac: str | None, netdata: str | None = None) -> BootPrepareRequest:
    return BootPrepareRequest(
        host=host,
        boot_mac_address=mac,
        purpose=BootPurpose.INSPECT,
        boot_method=BootMethod.VIRTUAL_MEDIA,
        preprovisioning_network_data_name=netdata,
    )


def iso_path(settings: Settings, url: str) -> Path:
    return settings.boot_dir / url.split("/", 3)[3]


def el_torito(iso: Path) -> list[str]:
    """The ISO's El Torito boot images' platforms, as xorriso reports them."""
    out = subprocess.run(
        ["xorriso", "-no_rc", "-indev", str(iso), "-report_el_torito", "plain"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split()[6] for line in out.splitlines() if line.startswith("El Torito boot img :")]


def extract(iso: Path, path: str, dest: Path) -> bytes | None:
    done = subprocess.run(
        ["xorriso", "-no_rc", "-osirrox", "on", "-indev", str(iso), "-extract", path, str(dest)],
        capture_output=True, check=False,
    )  # fmt: skip
    return dest.read_bytes() if done.returncode == 0 and dest.exists() else None


def sha(data: bytes | None) -> str:
    assert data is not None
    return hashlib.sha256(data).hexdigest()


def write_secret(settings: Settings, host: HostRef, name: str, data: dict[str, str]) -> None:
    """Where the CLI keeps a hostfile's Secrets: <state_dir>/secrets/<namespace>/<name>.yaml."""
    path = settings.state_dir / "secrets" / host.namespace / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def test_each_host_gets_its_own_iso_bootable_by_bios_and_uefi(
    vm_settings: Settings, base_iso: Path, tmp_path: Path
) -> None:
    env = ActivityEnvironment()
    url_a = env.run(prepare_boot, request(HOST_A, MAC_A)).iso_url
    url_b = env.run(prepare_boot, request(HOST_B, None)).iso_url
    assert url_a.startswith(f"http://192.0.2.1:8088/images/vmedia/{HOST_A.host_id}/") and url_a.endswith(
        ".iso"
    )
    assert len(url_a.rsplit("/", 1)[1]) >= 32, "the name is unguessable (a random token)"
    iso_a, iso_b = iso_path(vm_settings, url_a), iso_path(vm_settings, url_b)
    assert el_torito(base_iso) == el_torito(iso_a) == el_torito(iso_b) == ["BIOS", "UEFI"]

    # the UEFI boot image holds GRUB where the firmware looks for it
    efi = extract(iso_a, "/boot/efiboot.img", tmp_path / "efiboot.img")
    assert efi is not None
    listing = subprocess.run(
        ["mdir", "-b", "-i", str(tmp_path / "efiboot.img"), "::/EFI/BOOT"], capture_output=True, text=True
    ).stdout
    assert "BOOTX64.EFI" in listing.upper()

    # kernel and initrd are the base's, byte for byte; the boot loaders' files are the host's
    for path in ("/boot/vmlinuz", "/boot/initrd.img"):
        assert sha(extract(iso_a, path, tmp_path / "a")) == sha(extract(base_iso, path, tmp_path / "base"))
        (tmp_path / "a").unlink()
        (tmp_path / "base").unlink()
    for n, (iso, me, other, mac) in enumerate(
        ((iso_a, HOST_A, HOST_B, MAC_A), (iso_b, HOST_B, HOST_A, None))
    ):
        for cfg in ("/isolinux/isolinux.cfg", "/boot/grub/grub.cfg"):
            text = (extract(iso, cfg, tmp_path / f"{n}{cfg.replace('/', '_')}") or b"").decode()
            line = next(ln for ln in text.splitlines() if "metalflow.host_id=" in ln)
            assert f"metalflow.host_id={me.host_id} " in line
            assert f"metalflow.task_queue={me.agent_task_queue} " in line
            assert "metalflow.temporal=192.0.2.1:7233 " in line and "metalflow.medium=iso" in line
            assert ("BOOTIF=01-52-54-00-0a-00-01" in line) == (mac is not None)
            assert other.name not in text, f"{me.name}'s ISO names {other.name}"
        assert extract(iso, "/metalflow/network_data.json", tmp_path / f"nd{n}") is None
        # the ramdisk's own parser reads that command line as the host's
        parsed = subprocess.run(
            ["busybox", "sh", "-c", '. ./cmdline.sh && parse_cmdline "$1" && echo "$MF_HOST_ID|$MF_MEDIUM"',
             "sh", line.split("APPEND ", 1)[-1].split("linux /boot/vmlinuz ", 1)[-1]],
            cwd=RAMDISK, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert parsed == f"{me.host_id}|iso"
    # the base keeps no host's configuration
    base_cfg = (extract(base_iso, "/isolinux/isolinux.cfg", tmp_path / "base.cfg") or b"").decode()
    assert "metalflow.host_id" not in base_cfg and "metalflow.medium=iso" in base_cfg


async def test_served_at_a_new_url_per_boot_and_deleted_by_cleanup(vm_settings: Settings) -> None:
    env = ActivityEnvironment()
    first = env.run(prepare_boot, request(HOST_A, MAC_A)).iso_url
    second = env.run(prepare_boot, request(HOST_A, MAC_A)).iso_url
    assert first != second
    host_dir = vm_settings.boot_dir / "images" / "vmedia" / HOST_A.host_id
    assert sorted(p.name for p in host_dir.iterdir()) == [second.rsplit("/", 1)[1]], "the older ISO is gone"
    port = free_port()
    runner = await start_boot_server("127.0.0.1", port, vm_settings.boot_dir)
    local = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            path = second.split("8088", 1)[1]
            async with http.get(local + path) as resp:
                assert resp.status == 200
                assert await resp.read() == iso_path(vm_settings, second).read_bytes()
            async with http.get(f"{local}/images/vmedia/{HOST_A.host_id}/") as resp:
                assert resp.status in (403, 404), "no index lists the host's ISOs"
            env.run(cleanup_boot, HOST_A)
            async with http.get(local + path) as resp:
                assert resp.status == 404
    finally:
        await runner.cleanup()
    assert not host_dir.exists()
    env.run(cleanup_boot, HOST_A)  # idempotent


def test_vmedia_base_url_is_where_the_bmc_fetches(
    vm_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALFLOW_VMEDIA_BASE_URL", "http://127.0.0.1:9999/")
    url = ActivityEnvironment().run(prepare_boot, request(HOST_A, None)).iso_url
    assert url.startswith(f"http://127.0.0.1:9999/images/vmedia/{HOST_A.host_id}/")


def test_preprovisioning_network_data_goes_on_that_hosts_iso_only(
    vm_settings: Settings, tmp_path: Path
) -> None:
    write_secret(vm_settings, HOST_A, "a-preprov", {"networkData": json.dumps(NETWORK_DATA)})
    env = ActivityEnvironment()
    url_a = env.run(prepare_boot, request(HOST_A, MAC_A, "a-preprov")).iso_url
    url_b = env.run(prepare_boot, request(HOST_B, MAC_B)).iso_url
    got = json.loads(
        extract(iso_path(vm_settings, url_a), "/metalflow/network_data.json", tmp_path / "a") or b""
    )
    assert got == {
        "links": [{"id": "nic0", "mac": MAC_A, "mtu": 1500}],
        "networks": [
            {
                "link": "nic0",
                "mac": MAC_A,
                "type": "ipv4",
                "address": "198.51.100.23/24",
                "routes": [{"to": "0.0.0.0/0", "via": "198.51.100.1"}],
            }
        ],
        "dns": ["198.51.100.53"],
    }
    assert extract(iso_path(vm_settings, url_b), "/metalflow/network_data.json", tmp_path / "b") is None
    assert b"198.51.100" not in iso_path(vm_settings, url_b).read_bytes()


def _broken(**change: object) -> str:
    data = json.loads(json.dumps(NETWORK_DATA))
    for path, value in change.items():
        *parents, leaf = path.split("__")
        node = data
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is None:
            del node[leaf]
        else:
            node[int(leaf) if leaf.isdigit() else leaf] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("secret", "error_type", "names"),
    [
        ({"other": "x"}, "SecretInvalid", "no non-empty key 'networkData'"),
        ({"networkData": "links: [unclosed"}, "SecretMalformedYAML", "is not valid YAML"),
        (
            {"networkData": "[1, 2]"},
            "PreprovisioningNetworkDataInvalid",
            "must be an OpenStack network_data.json",
        ),
        ({"networkData": _broken(links=[])}, "PreprovisioningNetworkDataInvalid", "at links:"),
        (
            {"networkData": _broken(networks__0__link="nic9")},
            "PreprovisioningNetworkDataInvalid",
            "networks[0].link",
        ),
        (
            {"networkData": _broken(networks__0__ip_address="198.51.100.923")},
            "PreprovisioningNetworkDataInvalid",
            "at networks[0]: not a valid ip_address/netmask",
        ),
        (
            {"networkData": _broken(links__0__ethernet_mac_address="52:54:00:zz:00:01")},
            "PreprovisioningNetworkDataInvalid",
            "at links[0].ethernet_mac_address",
        ),
        (
            {"networkData": _broken(networks__0__type="bond")},
            "PreprovisioningNetworkDataInvalid",
            "networks[0].type",
        ),
    ],
)
def test_bad_network_data_is_a_typed_error_naming_the_field_and_nothing_is_written(
    vm_settings: Settings, secret: dict[str, str], error_type: str, names: str
) -> None:
    write_secret(vm_settings, HOST_A, "a-preprov", secret)
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(prepare_boot, request(HOST_A, MAC_A, "a-preprov"))
    assert err.value.type == error_type and err.value.non_retryable
    assert names in err.value.message, err.value.message
    assert "a-preprov" in err.value.message and ("fix" in err.value.message or "add it" in err.value.message)
    assert "198.51.100" not in err.value.message, "the Secret's content is not quoted"
    assert not (vm_settings.boot_dir / "images" / "vmedia").exists(), "no ISO written for bad input"


def test_a_missing_base_iso_is_a_typed_error_naming_the_setting(
    vm_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = ActivityEnvironment()
    monkeypatch.setenv("METALFLOW_DEPLOY_ISO", str(tmp_path / "missing.iso"))
    with pytest.raises(ApplicationError) as err:
        env.run(prepare_boot, request(HOST_A, MAC_A))
    assert err.value.type == "DeployISOMissing" and err.value.non_retryable
    assert "missing.iso" in err.value.message and "METALFLOW_DEPLOY_ISO" in err.value.message
    assert "python -m testbed.ramdisk" in err.value.message


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own with a NIC (MAC_A; a veth, its peer up), and its own resolv.conf
    (`ip netns exec` binds /etc/netns/NAME/resolv.conf over /etc/resolv.conf: the machine's is
    never written)."""
    name = f"mf-nd-{uuid.uuid4().hex[:6]}"
    etc = Path("/etc/netns") / name
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"cannot create a network namespace here: {err}")
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("# the test's own\n")
        subprocess.run(
            ["ip", "-n", name, "link", "add", "nic0", "address", MAC_A,
             "type", "veth", "peer", "name", "peer0"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(["ip", "-n", name, "link", "set", "peer0", "up"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)


def test_the_ramdisk_applies_the_network_data_it_finds_on_its_iso(
    vm_settings: Settings, netns: str, tmp_path: Path
) -> None:
    """ramdisk/netdata.py (what the init runs on the ISO's network_data.json) in a namespace of the
    test's own: the NIC with the link's MAC gets the address and the default route, DNS is set,
    and the init is told which NIC needs no DHCP."""
    write_secret(vm_settings, HOST_A, "a-preprov", {"networkData": json.dumps(NETWORK_DATA)})
    url = ActivityEnvironment().run(prepare_boot, request(HOST_A, MAC_A, "a-preprov")).iso_url
    on_iso = tmp_path / "network_data.json"
    assert extract(iso_path(vm_settings, url), "/metalflow/network_data.json", on_iso) is not None
    script = RAMDISK / "netdata.py"
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "python3", str(script), str(on_iso)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["nic0"], "the init runs no DHCP on nic0"
    addr = subprocess.run(["ip", "-n", netns, "-4", "addr", "show", "nic0"], capture_output=True, text=True)
    assert "inet 198.51.100.23/24" in addr.stdout and "mtu 1500" in addr.stdout
    routes = subprocess.run(["ip", "-n", netns, "-4", "route"], capture_output=True, text=True).stdout
    assert "default via 198.51.100.1 dev nic0" in routes, routes
    assert (Path("/etc/netns") / netns / "resolv.conf").read_text() == "nameserver 198.51.100.53\n"
