"""Hosts enrolled without a MAC (issue 21): SMBIOS UUID byte orders, the by-UUID boot path, the
boot server's answer to unknown and duplicate UUIDs, the MAC inspection learns, and registration
reading the UUID from a real IPMI BMC in both byte orders BMCs use.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import aiohttp
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from test_boot import boot_net as boot_net  # the network namespaces fixture
from test_boot import lease_script, start_dhcp_server

from activities.agent.inventory import boot_mac, mark_booted
from activities.bmc import validate
from activities.boot import agent_tokens, by_uuid, cleanup_boot, dnsmasq, forget_uuid, ipxe, prepare_boot
from metalflow.api.bmc import BMCTarget
from metalflow.api.boot import BootPrepareRequest, BootPurpose, learnt_boot_mac
from metalflow.api.models import NIC, HardwareDetails, HostRef, SecretRef
from metalflow.api.smbios import (
    InvalidSystemUUID,
    alternates,
    canonical,
    from_ipmi_spec_bytes,
    from_smbios_bytes,
    to_ipmi_spec_bytes,
    to_smbios_bytes,
)
from metalflow.runtime.metrics import UNKNOWN_MACHINE_BOOTS
from metalflow.runtime.settings import Settings
from testbed.datacenter import write_secret
from testbed.ipmi import IpmiBmc, start_ipmi_bmc
from testbed.processes import free_port
from worker.boot_server import start_boot_server

# DSP0134 (SMBIOS) 7.2.1's example: this UUID is stored as 33 22 11 00 55 44 77 66 88 99 AA BB ...
SPEC_UUID = "00112233-4455-6677-8899-aabbccddeeff"
SPEC_WIRE = bytes.fromhex("33221100554477668899aabbccddeeff")
A = HostRef(namespace="metal3", name="no-mac-a")
B = HostRef(namespace="metal3", name="no-mac-b")
UUID_A = "4c4c4544-0051-3510-8057-b7c04f4d3732"
UUID_B = "9a1e3c52-77d0-4f5b-a3b1-0c2d4e6f8091"
B_RECORDED = from_smbios_bytes(to_ipmi_spec_bytes(UUID_B))  # an IPMI-order BMC, decoded as SMBIOS


@pytest.fixture
def boot_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(tmp_path / "boot"))
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_URL", "http://192.0.2.1:8088")
    monkeypatch.setenv("METALFLOW_AGENT_TEMPORAL_ADDRESS", "192.0.2.1:7233")
    return Settings()


def prepare(host: HostRef, system_uuid: str, mac: str | None = None) -> object:
    req = BootPrepareRequest(
        host=host, boot_mac_address=mac, purpose=BootPurpose.INSPECT, system_uuid=system_uuid
    )
    return ActivityEnvironment().run(prepare_boot, req)


# ---- byte order ----


def test_smbios_wire_format_is_little_endian_in_the_first_three_fields() -> None:
    assert from_smbios_bytes(SPEC_WIRE) == SPEC_UUID
    assert to_smbios_bytes(SPEC_UUID.upper()) == SPEC_WIRE
    assert from_smbios_bytes(list(SPEC_WIRE)) == SPEC_UUID  # pyghmi hands raw data as a list


def test_ipmi_spec_order_is_all_sixteen_bytes_reversed() -> None:
    ipmi = bytes.fromhex("ffeeddccbbaa99887766554433221100")
    assert from_ipmi_spec_bytes(ipmi) == SPEC_UUID
    assert to_ipmi_spec_bytes(SPEC_UUID) == ipmi
    # read as if it were SMBIOS wire format (pyghmi's assumption), it is a different UUID...
    misread = from_smbios_bytes(ipmi)
    assert misread == "ccddeeff-aabb-8899-7766-554433221100"
    # ...which the boot server still matches to the machine iPXE names SPEC_UUID
    assert misread in alternates(SPEC_UUID)


def test_alternates_cover_pre_2_6_smbios_and_are_never_the_uuid_itself() -> None:
    swapped = "33221100-5544-7766-8899-aabbccddeeff"  # fields big-endian, decoded little-endian
    assert alternates(SPEC_UUID)[0] == swapped
    assert SPEC_UUID in alternates(swapped)
    assert SPEC_UUID not in alternates(SPEC_UUID)


def test_canonical_accepts_case_braces_and_urn_and_refuses_the_rest() -> None:
    assert canonical("{4C4C4544-0051-3510-8057-B7C04F4D3732}") == UUID_A
    assert canonical("urn:uuid:" + UUID_A) == UUID_A
    for bad in ("", "not-a-uuid", UUID_A[:-1], "${uuid}"):
        with pytest.raises(InvalidSystemUUID, match="not a system UUID"):
            canonical(bad)
    with pytest.raises(InvalidSystemUUID, match="16 bytes, got 15"):
        from_smbios_bytes(SPEC_WIRE[:15])


# ---- the MAC inspection learns ----


def test_agent_marks_the_nic_named_by_bootif(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cmdline").write_text("console=ttyS0 BOOTIF=01-52-54-00-AB-CD-EF quiet\n")
    assert boot_mac(tmp_path) == "52:54:00:ab:cd:ef"
    nics = [NIC(name="eth0", mac="52:54:00:00:00:01"), NIC(name="eth1", mac="52:54:00:ab:cd:ef")]
    marked = mark_booted(nics, boot_mac(tmp_path))
    assert [n.pxe for n in marked] == [False, True]
    assert learnt_boot_mac(HardwareDetails(nics=marked)) == "52:54:00:ab:cd:ef"
    # no BOOTIF (booted from virtual media), or two NICs claiming it: nothing is learnt
    (tmp_path / "proc" / "cmdline").write_text("console=ttyS0\n")
    assert boot_mac(tmp_path) == "" and mark_booted(nics, "") == nics
    assert learnt_boot_mac(HardwareDetails(nics=nics)) is None
    both = [n.model_copy(update={"pxe": True}) for n in nics]
    assert learnt_boot_mac(HardwareDetails(nics=both)) is None and learnt_boot_mac(None) is None


# ---- boot.prepare without a MAC ----


def test_prepare_without_mac_writes_the_script_under_the_uuid(boot_settings: Settings) -> None:
    result = prepare(A, UUID_A.upper())
    assert result.ipxe_script_url == f"http://192.0.2.1:8088/by-uuid/{UUID_A}"  # type: ignore[attr-defined]
    text = by_uuid.script_path(boot_settings.boot_dir, UUID_A).read_text()
    assert ipxe.check_syntax(text) == []
    kernel = next(line for line in text.splitlines() if line.startswith("kernel "))
    # iPXE fills in the NIC it booted from, so the agent can tell inspection which MAC it was
    assert "BOOTIF=01-${netX/mac:hexhyp}" in kernel and "metalflow.host_id=metal3.no-mac-a" in kernel
    assert "goto start" in text and "chain" not in text  # a retry never fetches the script again
    # nothing for dnsmasq: the host has no entry until its MAC is known
    assert not (dnsmasq.hosts_dir(boot_settings) / A.host_id).exists()
    assert prepare(A, UUID_A).ipxe_script_url == result.ipxe_script_url  # type: ignore[attr-defined]


def test_two_hosts_claiming_one_uuid_is_a_typed_error(boot_settings: Settings) -> None:
    prepare(A, UUID_A)
    with pytest.raises(ApplicationError) as err:
        prepare(B, UUID_A.upper())
    assert err.value.type == "DuplicateSystemUUID" and err.value.non_retryable
    assert UUID_A in err.value.message and "metal3.no-mac-a" in err.value.message
    assert "spec.bmc.address" in err.value.message
    # the first host's script is untouched; its boot cleanup (deployed: it boots its disk)
    # removes the script but keeps the claim; only deleting the host frees the UUID
    assert "metal3.no-mac-a" in by_uuid.script_path(boot_settings.boot_dir, UUID_A).read_text()
    ActivityEnvironment().run(cleanup_boot, A)
    assert not by_uuid.script_path(boot_settings.boot_dir, UUID_A).exists()
    with pytest.raises(ApplicationError, match="already claimed"):
        prepare(B, UUID_A)
    assert ActivityEnvironment().run(forget_uuid, A) is True
    assert ActivityEnvironment().run(forget_uuid, A) is False  # idempotent
    prepare(B, UUID_A)


def test_no_mac_and_no_uuid_is_a_typed_error_and_touches_nothing(boot_settings: Settings) -> None:
    with pytest.raises(ApplicationError) as err:
        prepare(A, "")
    assert err.value.type == "NoBootIdentity" and "spec.bootMACAddress" in err.value.message
    assert not (boot_settings.boot_dir / "uuid").exists()
    with pytest.raises(ApplicationError) as err:
        prepare(A, "zz-not-a-uuid")
    assert err.value.type == "InvalidSpec" and "not a system UUID" in err.value.message
    assert not (boot_settings.boot_dir / "uuid").exists()


def test_with_a_mac_the_uuid_path_is_not_used(boot_settings: Settings) -> None:
    result = prepare(A, UUID_A, mac="52:54:00:12:34:56")
    assert result.ipxe_script_url.endswith("/boot/52-54-00-12-34-56.ipxe")  # type: ignore[attr-defined]
    assert not (boot_settings.boot_dir / "uuid").exists()


# ---- the boot server ----


def unknown_count(reason: str) -> float:
    return UNKNOWN_MACHINE_BOOTS.labels(reason)._value.get()  # type: ignore[no-any-return]


async def test_boot_server_maps_uuids_in_either_byte_order_and_refuses_unknown_ones(
    boot_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await asyncio.to_thread(prepare, A, UUID_A)
    await asyncio.to_thread(prepare, B, B_RECORDED)
    port = free_port()
    runner = await start_boot_server("127.0.0.1", port, boot_settings.boot_dir)
    base = f"http://127.0.0.1:{port}/by-uuid"
    try:
        async with aiohttp.ClientSession() as http:

            async def get(name: str) -> str:
                async with http.get(f"{base}/{name}") as resp:
                    assert resp.status == 200  # iPXE runs the script either way
                    return await resp.text()

            def served(host: HostRef, system_uuid: str) -> str:
                """The host's script as its next boot's first fetch gets it: with a new token."""
                token = agent_tokens.issue(boot_settings.boot_dir, host.host_id, agent_tokens.Medium.PXE)
                text = by_uuid.script_path(boot_settings.boot_dir, system_uuid).read_text()
                return text.replace(agent_tokens.PLACEHOLDER, token.value)

            mine = served(A, UUID_A)
            assert await get(UUID_A) == mine
            mine = served(A, UUID_A)
            assert await get(UUID_A.upper()) == mine  # iPXE prints lower case; BMCs vary
            # the firmware names the machine in the other byte orders registration may have seen
            true_uuid = uuid.UUID(UUID_A)
            pre_2_6 = str(uuid.UUID(bytes=true_uuid.bytes_le))
            mine = served(A, UUID_A)
            assert await get(pre_2_6) == mine
            # B registered through an IPMI-order BMC (what registration then records); its
            # firmware's iPXE names it by the true UUID, and the mismatch is logged
            theirs = served(B, B_RECORDED)
            caplog.clear()
            assert await get(UUID_B) == theirs
            assert "disagree on the UUID's byte order" in caplog.text

            before = unknown_count("unknown")
            caplog.clear()
            text = await get("11111111-2222-3333-4444-555555555555")
            assert text.startswith("#!ipxe\n") and ipxe.check_syntax(text) == []
            assert "unknown machine 11111111-2222-3333-4444-555555555555" in text
            assert "kernel" not in text and "chain" not in text and text.rstrip().endswith("exit 1")
            assert unknown_count("unknown") == before + 1
            assert "unknown machine '11111111-2222-3333-4444-555555555555'" in caplog.text

            before = unknown_count("malformed")
            text = await get("echo%20pwned")
            assert "unknown machine (malformed)" in text and "pwned" not in text
            assert unknown_count("malformed") == before + 1
    finally:
        await runner.cleanup()


async def test_boot_server_refuses_a_uuid_two_hosts_claim_through_byte_orders(
    boot_settings: Settings,
) -> None:
    # A registered as the UUID, B as its pre-2.6 swap: a firmware reporting a third encoding
    # that matches both must not boot either host's ramdisk
    true_uuid = uuid.UUID(UUID_A)
    swapped = str(uuid.UUID(bytes=true_uuid.bytes_le))
    ipmi_misread = from_smbios_bytes(true_uuid.bytes[::-1])
    await asyncio.to_thread(prepare, A, swapped)
    await asyncio.to_thread(prepare, B, ipmi_misread)
    port = free_port()
    runner = await start_boot_server("127.0.0.1", port, boot_settings.boot_dir)
    try:
        before = unknown_count("ambiguous")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/by-uuid/{UUID_A}") as resp:
                text = await resp.text()
        assert "unknown machine" in text and "metal3.no-mac-a" in text and "metal3.no-mac-b" in text
        assert "kernel" not in text
        assert unknown_count("ambiguous") == before + 1
    finally:
        await runner.cleanup()


@pytest.mark.skipif(not shutil.which("dnsmasq"), reason="dnsmasq (dnsmasq-base) missing")
def test_dnsmasq_answers_unknown_ipxe_clients_with_the_uuid_url_only_when_asked(
    boot_settings: Settings, tmp_path: Path
) -> None:
    net = dnsmasq.BootNetwork(interface="eth1", range_start="192.0.2.50", range_end="192.0.2.99")
    plain = dnsmasq.base_config(net, boot_settings)
    assert "dhcp-ignore=tag:!known" in plain and "by-uuid" not in plain
    net = dnsmasq.BootNetwork(
        interface="eth1", range_start="192.0.2.50", range_end="192.0.2.99", tftp_root=tmp_path, uuid_boot=True
    )
    conf = dnsmasq.base_config(net, boot_settings)
    assert "dhcp-ignore" not in conf
    assert "dhcp-boot=tag:ipxe,tag:known,http://192.0.2.1:8088/boot/${mac:hexhyp}.ipxe" in conf
    assert "dhcp-boot=tag:ipxe,tag:!known,http://192.0.2.1:8088/by-uuid/${uuid}" in conf
    path = tmp_path / "dnsmasq.conf"
    path.write_text(conf)
    dnsmasq.hosts_dir(boot_settings).mkdir(parents=True)
    out = subprocess.run(["dnsmasq", "--test", "-C", str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "syntax check OK" in out.stderr, out.stderr


# ---- registration reads the UUID from a real IPMI BMC (the test bed's, pyghmi's server) ----


@pytest.mark.parametrize("order", ["smbios", "ipmi"])
def bmc_target(bmc: IpmiBmc, tmp_path: Path) -> BMCTarget:
    secret = tmp_path / "bmc-secret.yaml"
    write_secret(secret, {"username": bmc.username, "password": bmc.password})
    return BMCTarget(address=bmc.address, credentials=SecretRef(name="bmc", path=str(secret)))


@pytest.mark.parametrize("order", ["smbios", "ipmi"])
def test_ipmi_registration_reads_the_system_guid_in_either_order(tmp_path: Path, order: str) -> None:
    bmc = start_ipmi_bmc(tmp_path / "bmc", "admin", "ipmi-pw", guid=UUID_A, guid_order=order)
    try:
        checked = ActivityEnvironment().run(validate, bmc_target(bmc, tmp_path))
    finally:
        bmc.stop()
    if order == "smbios":
        assert checked.system_uuid == UUID_A
    else:  # decoded as SMBIOS order, an IPMI-order BMC gives another name the boot server accepts
        assert checked.system_uuid != UUID_A and checked.system_uuid in alternates(UUID_A)


def test_ipmi_bmc_without_get_system_guid_reports_no_uuid(tmp_path: Path) -> None:
    bmc = start_ipmi_bmc(tmp_path / "bmc", "admin", "ipmi-pw")
    try:
        checked = ActivityEnvironment().run(validate, bmc_target(bmc, tmp_path))
    finally:
        bmc.stop()
    assert checked.system_uuid == "" and not checked.powered_on


# ---- a real DHCP exchange (dnsmasq and busybox udhcpc in network namespaces the test makes) ----


@pytest.mark.skipif(not shutil.which("dnsmasq"), reason="dnsmasq (dnsmasq-base) missing")
@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox (udhcpc) missing")
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_real_dhcp_unknown_ipxe_client_is_sent_the_uuid_url_a_known_mac_its_own(
    boot_net: tuple[str, str], boot_settings: Settings, tmp_path: Path
) -> None:
    srv, cli = boot_net
    tag = srv.rsplit("-", 1)[1]
    known = "52:54:00:12:34:56"
    server = start_dhcp_server(
        srv, tmp_path, boot_settings, [(known, "worker-0", "192.0.2.55")], uuid_boot=True
    )
    try:
        script, out = lease_script(tmp_path)
        iface = f"vc{tag}"

        def lease(mac: str, ipxe_client: bool) -> dict[str, str]:
            # dnsmasq pings an address from its dynamic range before offering it (about 3 s),
            # longer than test_boot's udhcpc waits: this client waits up to 5 x 3 s
            netns = ["ip", "netns", "exec", cli]
            for args in (["down"], ["address", mac], ["up"]):
                subprocess.run([*netns, "ip", "link", "set", iface, *args], check=True)
            out.unlink(missing_ok=True)
            udhcpc = [*netns, "busybox", "udhcpc", "-i", iface, "-n", "-q", "-f", "-t", "5", "-T", "3"]
            udhcpc += ["-A", "1", "-s", str(script), *(["-x", "0x4d:69505845"] if ipxe_client else [])]
            done = subprocess.run(udhcpc, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0 and out.exists(), (tmp_path / "dnsmasq.log").read_text()[-3000:]
            return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)

        # a known MAC keeps its own path
        assert lease(known, True)["boot_file"] == "http://192.0.2.1:8088/boot/${mac:hexhyp}.ipxe"
        # a MAC nobody enrolled: iPXE is sent the generic URL naming the machine by its UUID...
        got = lease("52:54:00:99:99:99", True)
        assert got["boot_file"] == "http://192.0.2.1:8088/by-uuid/${uuid}"
        assert got["ip"].startswith("192.0.2.") and got["ip"] != "192.0.2.55"
        # ...and its plain PXE firmware is first sent iPXE to get there
        assert lease("52:54:00:99:99:98", False)["boot_file"] == "undionly.kpxe"
    finally:
        server.stop()
