"""Network boot: rendered iPXE/dnsmasq files, the boot server, and a real DHCP exchange in netns."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.boot import agent_tokens, cleanup_boot, dnsmasq, ipxe, prepare_boot
from activities.configdrive import build_iso
from metalflow.api.bmc_address import BootMethod
from metalflow.api.boot import BootPrepareRequest, BootPurpose
from metalflow.api.models import BootMode, HostRef
from metalflow.runtime.settings import Settings
from testbed.processes import Process, free_port, wait_for
from worker.boot_server import start_boot_server

MAC = "52:54:00:12:34:56"
ARM_MAC = "52:54:00:12:34:57"
REF = HostRef(namespace="metal3", name="worker-0")
needs_dnsmasq = pytest.mark.skipif(not shutil.which("dnsmasq"), reason="dnsmasq (dnsmasq-base) missing")


@pytest.fixture
def boot_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(tmp_path / "boot"))
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_URL", "http://192.0.2.1:8088")
    monkeypatch.setenv("METALFLOW_AGENT_TEMPORAL_ADDRESS", "192.0.2.1:7233")
    monkeypatch.setenv("METALFLOW_TEMPORAL_NAMESPACE", "metal")
    return Settings()


def test_ipxe_script_carries_addresses_never_secrets(boot_settings: Settings) -> None:
    text = ipxe.script(REF, MAC, BootPurpose.INSPECT, boot_settings)
    assert ipxe.check_syntax(text) == []
    kernel = next(line for line in text.splitlines() if line.startswith("kernel "))
    for arg in (
        "metalflow.host_id=metal3.worker-0",
        "metalflow.temporal=192.0.2.1:7233",
        "metalflow.namespace=metal",
        "metalflow.tls=0",
        "metalflow.task_queue=host-metal3.worker-0",
        "http://192.0.2.1:8088/vmlinuz",
        "BOOTIF=01-52-54-00-12-34-56",
    ):
        assert arg in kernel
    # the one secret, the boot's agent token, is filled in by the boot server (test_agent_tokens.py)
    assert f"metalflow.token={agent_tokens.PLACEHOLDER}" in kernel and "metalflow.boot_server=" in kernel
    rest = text.replace(f"metalflow.token={agent_tokens.PLACEHOLDER}", "").lower()
    assert "password" not in rest and "token" not in rest
    assert "goto start" in text and "chain" not in text  # a retry never fetches the script again
    assert ipxe.check_syntax("kernel x\n") == ["the first line must be #!ipxe"]
    assert "unknown command 'frobnicate'" in ipxe.check_syntax("#!ipxe\nfrobnicate now\n")[0]


def test_prepare_is_atomic_idempotent_and_cleanup_removes_everything(boot_settings: Settings) -> None:
    env = ActivityEnvironment()
    req = BootPrepareRequest(host=REF, boot_mac_address=MAC, purpose=BootPurpose.DEPLOY)
    got = env.run(prepare_boot, req)
    assert got.ipxe_script_url == "http://192.0.2.1:8088/boot/52-54-00-12-34-56.ipxe"
    boot = boot_settings.boot_dir
    by_mac = boot / "boot" / "52-54-00-12-34-56.ipxe"
    entry = boot / "dnsmasq" / "hosts" / "metal3.worker-0"
    assert by_mac.read_text().startswith("#!ipxe") and entry.read_text().strip() == f"{MAC},worker-0"
    mtime = entry.stat().st_mtime_ns
    env.run(prepare_boot, req)
    assert entry.stat().st_mtime_ns == mtime, "an unchanged entry is not rewritten (no needless reload)"
    assert not list(boot.rglob(".*.tmp"))
    env.run(cleanup_boot, REF)
    assert (
        not by_mac.exists() and not entry.exists() and not (boot / "boot" / "metal3.worker-0.ipxe").exists()
    )
    env.run(cleanup_boot, REF)  # idempotent
    with pytest.raises(ApplicationError, match="bootMACAddress"):
        env.run(prepare_boot, req.model_copy(update={"boot_mac_address": None}))


@needs_dnsmasq
def test_boot_method_picks_what_prepare_writes(boot_settings: Settings) -> None:
    env = ActivityEnvironment()
    # virtual media without a MAC: nothing for DHCP, only the ISO's URL
    vmedia = BootPrepareRequest(
        host=REF, boot_mac_address=None, purpose=BootPurpose.INSPECT, boot_method=BootMethod.VIRTUAL_MEDIA
    )
    # (the host's own ISO, made from the base ISO: tests/test_vmedia.py)
    (boot_settings.boot_dir).mkdir(parents=True, exist_ok=True)
    (boot_settings.boot_dir / "deploy.iso").write_bytes(build_iso({"metalflow/deploy-iso": b"x"}))
    iso_url = env.run(prepare_boot, vmedia).iso_url
    assert iso_url.startswith("http://192.0.2.1:8088/images/vmedia/metal3.worker-0/") and iso_url.endswith(
        ".iso"
    )
    assert not (boot_settings.boot_dir / "dnsmasq" / "hosts" / "metal3.worker-0").exists()
    # a request recorded before boot_method existed said virtual media with its flag alone
    legacy = BootPrepareRequest.model_validate(
        {"host": {"name": "worker-0"}, "bootMacAddress": None, "purpose": "inspect", "virtualMedia": True}
    )
    assert legacy.boot_method == BootMethod.VIRTUAL_MEDIA
    # UEFI HTTP boot: refused, typed, with nothing written, while the boot server lacks the EFI
    # iPXE the firmware is sent to, or when the host boots legacy
    entry = boot_settings.boot_dir / "dnsmasq" / "hosts" / REF.host_id
    uefi = vmedia.model_copy(update={"boot_mac_address": MAC, "boot_method": BootMethod.UEFI_HTTP})
    with pytest.raises(ApplicationError) as err:
        env.run(prepare_boot, uefi)
    assert err.value.type == "BootMethodNotBuilt" and err.value.non_retryable
    served = boot_settings.boot_dir / "snponly.efi"
    assert f"{served} does not exist; copy it there" in err.value.message
    assert not entry.exists()
    served.parent.mkdir(parents=True, exist_ok=True)
    served.write_bytes(b"MZ placeholder: this test never runs it")
    with pytest.raises(ApplicationError) as err:
        env.run(prepare_boot, uefi.model_copy(update={"boot_mode": BootMode.LEGACY}))
    assert (
        err.value.type == "InvalidSpec"
        and "spec.bootMode legacy cannot boot by UEFI HTTP" in err.value.message
    )
    assert not entry.exists()
    # then the same iPXE script and DHCP entry as PXE: the firmware's vendor class (HTTPClient)
    # picks the answer, and the entry carries no tag (see test_reload_after_leases_...)
    done = env.run(prepare_boot, uefi)
    assert done.ipxe_script_url == "http://192.0.2.1:8088/boot/52-54-00-12-34-56.ipxe"
    assert entry.read_text().strip() == f"{MAC},worker-0"
    pxe = env.run(prepare_boot, uefi.model_copy(update={"boot_method": BootMethod.PXE}))
    assert pxe.ipxe_script_url == done.ipxe_script_url
    assert entry.read_text().strip() == f"{MAC},worker-0"


def test_generated_dnsmasq_config_passes_dnsmasq_test(boot_settings: Settings, tmp_path: Path) -> None:
    net = dnsmasq.BootNetwork(
        interface="eth1",
        range_start="192.0.2.50",
        range_end="192.0.2.99",
        tftp_root=tmp_path,
        pid_file=tmp_path / "d.pid",
        lease_file=tmp_path / "leases",
    )
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(dnsmasq.base_config(net, boot_settings))
    for needed in ("enable-ra", "dhcp-ignore=tag:!known", "dhcp-userclass=set:ipxe,iPXE", "port=0"):
        assert needed in conf.read_text()
    dnsmasq.hosts_dir(boot_settings).mkdir(parents=True)
    out = subprocess.run(["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0 and "syntax check OK" in out.stderr, out.stderr


async def test_boot_server_serves_scripts_images_and_ranges(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    (boot / "images").mkdir(parents=True)
    (boot / "images" / "os.img").write_bytes(bytes(range(256)) * 4096)
    (boot / "boot").mkdir()
    (boot / "boot" / "52-54-00-12-34-56.ipxe").write_text("#!ipxe\n")
    (boot / "vmlinuz").write_bytes(b"kernel")
    port = free_port()
    runner = await start_boot_server("127.0.0.1", port, boot)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with s.get(f"{base}/boot/52-54-00-12-34-56.ipxe") as r:
                assert await r.text() == "#!ipxe\n"
            async with s.get(f"{base}/vmlinuz") as r:
                assert await r.read() == b"kernel"
            async with s.get(f"{base}/images/os.img", headers={"Range": "bytes=256-511"}) as r:
                assert r.status == 206 and await r.read() == bytes(range(256))
            for path in ("/images/../../etc/passwd", "/../etc/passwd", "/boot/nope.ipxe"):
                async with s.get(base + path) as r:
                    assert r.status in (403, 404), path
    finally:
        await runner.cleanup()


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def boot_net() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair: the boot network and one server's NIC."""
    tag = uuid.uuid4().hex[:6]
    srv, cli = f"mf-srv-{tag}", f"mf-cli-{tag}"
    try:
        subprocess.run(["ip", "netns", "add", srv], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        pytest.skip(f"cannot create network namespaces here: {err}")
    try:
        _ip("ip", "netns", "add", cli)
        _ip("ip", "link", "add", f"vs{tag}", "type", "veth", "peer", "name", f"vc{tag}")
        _ip("ip", "link", "set", f"vs{tag}", "netns", srv)
        _ip("ip", "link", "set", f"vc{tag}", "netns", cli)
        _ip("ip", "addr", "add", "192.0.2.1/24", "dev", f"vs{tag}", ns=srv)
        _ip("ip", "addr", "add", "fd00:6d66::1/64", "dev", f"vs{tag}", ns=srv)
        _ip("ip", "link", "set", f"vs{tag}", "up", ns=srv)
        _ip("ip", "link", "set", "lo", "up", ns=srv)
        yield srv, cli
    finally:
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# What OVMF sends: client architecture (option 93) 7 for PXE, 16 for HTTP boot (RFC 4578, IANA
# "Processor Architecture Types"), and vendor class PXEClient / HTTPClient (option 60).
EFI_PXE = ("-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007")
HTTP_BOOT = ("-V", "HTTPClient:Arch:00016:UNDI:003001", "-x", "0x5d:0010", "-O", "vendor")
ARM_PXE = ("-V", "PXEClient:Arch:00011:UNDI:003000", "-x", "0x5d:000b")
ARM_HTTP_BOOT = ("-V", "HTTPClient:Arch:00019:UNDI:003001", "-x", "0x5d:0013", "-O", "vendor")
HTTP_MAC = "52:54:00:12:34:58"


def _dhcp(
    cli: str, iface: str, mac: str, script: Path, out: Path, ipxe_client: bool, firmware: tuple[str, ...] = ()
) -> bool:
    """One DHCP exchange with udhcpc; `firmware`: the options a UEFI client adds (EFI_PXE, HTTP_BOOT)."""
    subprocess.run(["ip", "netns", "exec", cli, "ip", "link", "set", iface, "down"], check=True)
    subprocess.run(["ip", "netns", "exec", cli, "ip", "link", "set", iface, "address", mac], check=True)
    subprocess.run(["ip", "netns", "exec", cli, "ip", "link", "set", iface, "up"], check=True)
    out.unlink(missing_ok=True)
    cmd = [
        "ip",
        "netns",
        "exec",
        cli,
        "busybox",
        "udhcpc",
        "-i",
        iface,
        "-n",
        "-q",
        "-f",
        "-t",
        "3",
        "-T",
        "1",
        "-A",
        "1",
        "-s",
        str(script),
    ]
    if ipxe_client:
        cmd += ["-x", "0x4d:69505845"]  # option 77 (user class) = "iPXE", as iPXE sends it
    cmd += list(firmware)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and out.exists()


def start_dhcp_server(
    srv: str,
    tmp_path: Path,
    settings: Settings,
    entries: list[tuple[str, str, str]],
    uuid_boot: bool = False,
    interface: str = "",
) -> Process:
    """dnsmasq with the rendered config in namespace SRV (on INTERFACE, by default its veth
    `vs<tag>`), one host entry per (mac, name, ip) as boot.prepare writes them; started and waited
    for (its pid file)."""
    tag = srv.rsplit("-", 1)[1]
    net = dnsmasq.BootNetwork(
        interface=interface or f"vs{tag}",
        range_start="192.0.2.50",
        range_end="192.0.2.99",
        tftp_root=tmp_path,
        pid_file=tmp_path / "dnsmasq.pid",
        lease_file=tmp_path / "leases",
        run_as="root",
        uuid_boot=uuid_boot,
    )
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(dnsmasq.base_config(net, settings))
    hosts = dnsmasq.hosts_dir(settings)
    hosts.mkdir(parents=True)
    for mac, name, ip in entries:
        (hosts / f"metal3.{name}").write_text(dnsmasq.host_entry(mac, name, ip))
    server = Process(
        "dnsmasq",
        ["ip", "netns", "exec", srv, "dnsmasq", "--keep-in-foreground", "--log-facility=-", "-C", str(conf)],
        tmp_path / "dnsmasq.log",
    )
    try:
        wait_for(lambda: (server.check_alive(), (tmp_path / "dnsmasq.pid").exists())[1], 10, "dnsmasq")
    except BaseException:
        server.stop()
        raise
    return server


def lease_script(tmp_path: Path) -> tuple[Path, Path]:
    """A udhcpc script that writes the bound lease's environment: (script, where it writes)."""
    out = tmp_path / "lease.env"
    script = tmp_path / "udhcpc.sh"
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
    script.chmod(0o755)
    return script, out


@needs_dnsmasq
@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox (udhcpc) missing")
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_real_dhcp_exchange_known_mac_gets_its_address_and_ipxe_script(
    boot_net: tuple[str, str], boot_settings: Settings, tmp_path: Path
) -> None:
    srv, cli = boot_net
    tag = srv.rsplit("-", 1)[1]
    server = start_dhcp_server(
        srv, tmp_path, boot_settings, [(MAC, "worker-0", "192.0.2.55"), (ARM_MAC, "arm-0", "192.0.2.56")]
    )
    hosts = dnsmasq.hosts_dir(boot_settings)
    try:
        script, out = lease_script(tmp_path)
        iface = f"vc{tag}"

        assert _dhcp(cli, iface, MAC, script, out, ipxe_client=True), (tmp_path / "dnsmasq.log").read_text()
        lease = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        assert lease["ip"] == "192.0.2.55"
        assert lease["boot_file"] == "http://192.0.2.1:8088/boot/${mac:hexhyp}.ipxe"

        # plain PXE firmware (no iPXE user class) is told to chainload iPXE over TFTP
        assert _dhcp(cli, iface, MAC, script, out, ipxe_client=False)
        lease = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        assert lease["boot_file"] == "undionly.kpxe"

        # an aarch64 host's firmware (client arch 11) is sent the arm64 iPXE binary, an x86 one never is
        assert _dhcp(cli, iface, ARM_MAC, script, out, ipxe_client=False, firmware=ARM_PXE)
        lease = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        assert lease["boot_file"] == "ipxe-arm64.efi"

        # UEFI PXE firmware (arch 7) is told to chainload the EFI iPXE that uses the firmware's
        # NIC driver, snponly.efi (the VM test bed checks its TFTP root holds it: testbed/vm.py)
        assert _dhcp(cli, iface, MAC, script, out, ipxe_client=False, firmware=EFI_PXE)
        lease = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        assert lease["boot_file"] == "snponly.efi"

        # a PXE host asking as an HTTP client is sent the URL too (its firmware chose HTTP boot)
        assert _dhcp(cli, iface, MAC, script, out, ipxe_client=False, firmware=HTTP_BOOT)
        lease = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        assert lease["boot_file"] == "http://192.0.2.1:8088/snponly.efi"

        # UEFI HTTP boot: the firmware asking as HTTPClient is answered with the EFI iPXE's URL
        # on the boot server and option 60 echoed; the iPXE it then runs gets its script as any
        # host's does (an arm64 firmware's HTTP boot, arch 19, gets the arm64 binary's URL)
        (hosts / "metal3.http-0").write_text(dnsmasq.host_entry(HTTP_MAC, "http-0", "192.0.2.57"))
        assert _dhcp(cli, iface, HTTP_MAC, script, out, ipxe_client=False, firmware=HTTP_BOOT)
        lease = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        assert lease["boot_file"] == "http://192.0.2.1:8088/snponly.efi", lease
        assert lease["ip"] == "192.0.2.57"
        assert lease["vendor"] == "HTTPClient"  # option 60, which udhcpc exports as vendor
        assert _dhcp(cli, iface, ARM_MAC, script, out, ipxe_client=False, firmware=ARM_HTTP_BOOT)
        lease = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        assert lease["boot_file"] == "http://192.0.2.1:8088/ipxe-arm64.efi", lease
        assert _dhcp(cli, iface, HTTP_MAC, script, out, ipxe_client=True, firmware=EFI_PXE)
        lease = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
        assert lease["boot_file"] == "http://192.0.2.1:8088/boot/${mac:hexhyp}.ipxe"

        # an unknown MAC gets nothing at all
        assert not _dhcp(cli, iface, "52:54:00:99:99:99", script, out, ipxe_client=True)
        assert "ignored" in (tmp_path / "dnsmasq.log").read_text()
    finally:
        server.stop()


@needs_dnsmasq
@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox (udhcpc) missing")
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_reload_after_leases_keeps_dnsmasq_serving_and_drops_removed_hosts(
    boot_net: tuple[str, str], boot_settings: Settings, tmp_path: Path
) -> None:
    """boot.cleanup SIGHUPs dnsmasq (dnsmasq.reload) so a removed host is forgotten at once; after
    leases went to x86, arm64 and HTTP-boot clients, dnsmasq must keep serving. (With `set:` tags
    in the host entries, as metalflow wrote them before, Debian's dnsmasq 2.89 died of SIGSEGV
    here; a removed entry is not forgotten without the SIGHUP.)"""
    srv, cli = boot_net
    tag = srv.rsplit("-", 1)[1]
    entries = [
        (MAC, "worker-0", "192.0.2.55"),
        (ARM_MAC, "arm-0", "192.0.2.56"),
        (HTTP_MAC, "http-0", "192.0.2.57"),
    ]
    server = start_dhcp_server(srv, tmp_path, boot_settings, entries)
    hosts, log = dnsmasq.hosts_dir(boot_settings), tmp_path / "dnsmasq.log"
    settings = boot_settings.model_copy(update={"dnsmasq_pid_file": tmp_path / "dnsmasq.pid"})
    try:
        script, out = lease_script(tmp_path)
        iface = f"vc{tag}"
        for mac, firmware in ((MAC, ()), (ARM_MAC, ARM_PXE), (HTTP_MAC, HTTP_BOOT)):
            assert _dhcp(cli, iface, mac, script, out, ipxe_client=False, firmware=firmware), log.read_text()
        (hosts / "metal3.worker-0").unlink()  # what boot.cleanup does, then it reloads
        assert dnsmasq.reload(settings)
        # dnsmasq logs the host files it re-reads after the SIGHUP; a crashed one raises here
        wait_for(
            lambda: (server.check_alive(), "metal3.arm-0" in log.read_text().split("removed")[-1])[1], 10, ""
        )
        assert not _dhcp(cli, iface, MAC, script, out, ipxe_client=True), "a removed host is still answered"
        assert _dhcp(cli, iface, ARM_MAC, script, out, ipxe_client=False, firmware=ARM_PXE), log.read_text()
        server.check_alive()
    finally:
        server.stop()


# Two MACs whose dnsmasq address hash (SDBM over the MAC bytes, modulo the range's size) picks the
# same address in 192.0.2.50-99: a pair that met in a real e2e run, where the UEFI PXE VM was NAKed
# and its OVMF fell through to HTTP boot.
COLLIDING_MACS = ("52:54:00:05:b7:68", "52:54:00:0f:7e:f7")


def _dnsmasq_hash_slot(mac: str, size: int) -> int:
    j = 0
    for b in bytes.fromhex(mac.replace(":", "")):
        j = (b + (j << 6) + (j << 16) - j) & 0xFFFFFFFF
    return (j or 1) % size


@needs_dnsmasq
@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox (udhcpc) missing")
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_machines_booting_together_are_offered_distinct_addresses(
    boot_net: tuple[str, str], boot_settings: Settings, tmp_path: Path
) -> None:
    """metalflow powers hosts on together. dnsmasq keeps no record of an offer, so by default it
    offers two machines whose MACs hash alike the same address and NAKs the slower one's request;
    UEFI PXE firmware does not recover from that NAK. The rendered config allocates in sequence, in
    which mode dnsmasq skips an address just offered to another client: two firmware clients with
    colliding MACs, discovering at once on one bridge, are offered distinct addresses, none NAKed."""
    assert len({_dnsmasq_hash_slot(m, 50) for m in COLLIDING_MACS}) == 1  # they do collide
    srv, cli = boot_net
    tag = srv.rsplit("-", 1)[1]
    bridge = f"br{tag}"
    _ip("ip", "link", "add", bridge, "type", "bridge", ns=srv)
    _ip("ip", "link", "set", f"vs{tag}", "master", bridge, ns=srv)
    _ip("ip", "addr", "flush", "dev", f"vs{tag}", ns=srv)
    _ip("ip", "addr", "add", "192.0.2.1/24", "dev", bridge, ns=srv)
    _ip("ip", "link", "set", bridge, "up", ns=srv)
    _ip("ip", "link", "add", f"vt{tag}", "type", "veth", "peer", "name", f"vd{tag}")
    _ip("ip", "link", "set", f"vt{tag}", "netns", srv)
    _ip("ip", "link", "set", f"vd{tag}", "netns", cli)
    _ip("ip", "link", "set", f"vt{tag}", "master", bridge, ns=srv)
    _ip("ip", "link", "set", f"vt{tag}", "up", ns=srv)
    nics = (f"vc{tag}", f"vd{tag}")
    for nic, mac in zip(nics, COLLIDING_MACS, strict=True):
        _ip("ip", "link", "set", nic, "address", mac, ns=cli)
        _ip("ip", "link", "set", nic, "up", ns=cli)
    server = start_dhcp_server(srv, tmp_path, boot_settings, [], uuid_boot=True, interface=bridge)
    log = tmp_path / "dnsmasq.log"
    try:
        script = tmp_path / "udhcpc.sh"
        script.write_text('#!/bin/sh\n[ "$1" = bound ] && echo "$ip" > "$OUT_DIR/$interface"\nexit 0\n')
        script.chmod(0o755)
        env = {**os.environ, "OUT_DIR": str(tmp_path)}
        udhcpc = ["ip", "netns", "exec", cli, "busybox", "udhcpc", "-n", "-q", "-f", "-t", "6", "-T", "3"]
        clients = [
            subprocess.Popen(
                [*udhcpc, "-i", nic, "-s", str(script), *EFI_PXE],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for nic in nics
        ]
        for c in clients:
            c.wait(timeout=60)
        text = log.read_text()
        offer_lines = [ln.split() for ln in text.splitlines() if "DHCPOFFER" in ln]
        offers = {mac: {f[3] for f in offer_lines if f[-1] == mac} for mac in COLLIDING_MACS}
        assert all(offers.values()) and not offers[COLLIDING_MACS[0]] & offers[COLLIDING_MACS[1]], offers
        assert "DHCPNAK" not in text, text[-3000:]
        bound = {(tmp_path / nic).read_text().strip() for nic in nics}
        assert len(bound) == 2, bound
    finally:
        server.stop()
