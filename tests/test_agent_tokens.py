"""Agent tokens (activities/boot/agent_tokens.py): one per ramdisk boot, handed out by the boot
medium only, asked for by the boot server before it serves a host's secrets. Attacks: a config
drive fetched without a token, with a guess, with an earlier boot's token; a second fetch of a
PXE host's script; and, through a whole provisioning, a second fetch while the host runs its
ramdisk: the host still provisions, with a new boot and a new token, and no token is in history.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from history_scan import assert_no_secret_in_histories
from prometheus_client import REGISTRY
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from test_lifecycle import dc, wait_status  # noqa: F401  (the datacenter fixture)
from tests_support import record

from activities.agent import AgentActivities
from activities.agent.boot_auth import headers_for
from activities.agent.config import AgentConfig, FileDisk
from activities.boot import agent_tokens, prepare_boot
from activities.boot.agent_tokens import Medium, Verdict
from activities.configdrive import stage_configdrive
from metalflow.api.agent import WriteConfigDriveRequest
from metalflow.api.bmc_address import BootMethod
from metalflow.api.boot import BootPrepareRequest, BootPrepareResult, BootPurpose
from metalflow.api.configdrive import ConfigDriveRequest, ConfigDriveStaged
from metalflow.api.models import HostRef, SecretRef
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter, write_secret
from testbed.firmware_boot import from_script
from testbed.processes import free_port
from worker.boot_server import start_boot_server

HOST = HostRef(namespace="ns", name="h0")
MAC = "52:54:00:aa:bb:01"
SCRIPT = "/boot/52-54-00-aa-bb-01.ipxe"


def events(kind: str) -> float:
    return REGISTRY.get_sample_value("metalflow_agent_token_security_events_total", {"kind": kind}) or 0.0


@pytest_asyncio.fixture
async def boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Path, str]]:
    """The real boot server on a port of its own; the activities write into its directory."""
    port, directory = free_port(), tmp_path / "boot"
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(directory))
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_URL", base)
    monkeypatch.setenv("METALFLOW_AGENT_TEMPORAL_ADDRESS", "192.0.2.1:7233")
    runner = await start_boot_server("127.0.0.1", port, directory)
    try:
        yield directory, base
    finally:
        await runner.cleanup()


def prepare(method: BootMethod = BootMethod.PXE) -> BootPrepareResult:
    req = BootPrepareRequest(host=HOST, boot_mac_address=MAC, purpose=BootPurpose.INSPECT, boot_method=method)
    result: BootPrepareResult = ActivityEnvironment().run(prepare_boot, req)
    return result


def stage_drive(tmp_path: Path) -> ConfigDriveStaged:
    secret = tmp_path / "ud.yaml"
    write_secret(
        secret, {"userData": "#cloud-config\nruncmd: [echo bootstrap-token-abcdef.0123456789abcdef]\n"}
    )
    req = ConfigDriveRequest(host=HOST, user_data=SecretRef(name="ud", path=str(secret)), attempt="a1")
    staged: ConfigDriveStaged = ActivityEnvironment().run(stage_configdrive, req)
    return staged


async def get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, (await resp.read()).decode(errors="replace")


def test_a_token_per_boot_stored_for_root_only_and_each_new_boot_voids_the_last(tmp_path: Path) -> None:
    first = agent_tokens.issue(tmp_path, HOST.host_id, Medium.PXE)
    path = agent_tokens.token_dir(tmp_path) / f"{HOST.host_id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent_tokens.token_dir(tmp_path).stat().st_mode) == 0o700
    assert first.value not in first.fingerprint and len(first.value) >= 43  # 256 bits, url-safe
    bearer = f"Bearer {first.value}"
    assert agent_tokens.check(tmp_path, HOST.host_id, bearer) == Verdict.OK
    assert agent_tokens.check(tmp_path, HOST.host_id, None) == Verdict.MISSING
    assert agent_tokens.check(tmp_path, HOST.host_id, f"Basic {first.value}") == Verdict.MISSING
    assert agent_tokens.check(tmp_path, HOST.host_id, "Bearer guess") == Verdict.WRONG
    assert agent_tokens.check(tmp_path, "ns.other", bearer) == Verdict.NONE_ISSUED
    second = agent_tokens.issue(tmp_path, HOST.host_id, Medium.PXE)
    assert second.value != first.value
    assert agent_tokens.check(tmp_path, HOST.host_id, bearer) == Verdict.WRONG, "an earlier boot's token"
    # the script's first fetch gets it; a second is recorded and compromises it
    assert agent_tokens.hand_out(tmp_path, HOST.host_id, "10.0.0.5") == second
    assert agent_tokens.hand_out(tmp_path, HOST.host_id, "10.0.0.66") is None
    assert agent_tokens.refetches(tmp_path, HOST.host_id)[0].endswith(" 10.0.0.66")
    assert agent_tokens.check(tmp_path, HOST.host_id, f"Bearer {second.value}") == Verdict.COMPROMISED
    # a new boot starts clean; leaving the ramdisk voids it
    third = agent_tokens.issue(tmp_path, HOST.host_id, Medium.ISO)
    assert agent_tokens.check(tmp_path, HOST.host_id, f"Bearer {third.value}") == Verdict.OK
    assert agent_tokens.hand_out(tmp_path, HOST.host_id, "10.0.0.5") is None, (
        "an ISO's token is never in a script"
    )
    agent_tokens.revoke(tmp_path, HOST.host_id)
    assert agent_tokens.check(tmp_path, HOST.host_id, f"Bearer {third.value}") == Verdict.NONE_ISSUED
    with pytest.raises(ValueError, match="not a host id"):
        agent_tokens.issue(tmp_path, "../escape", Medium.PXE)


async def test_the_script_hands_its_token_out_once_and_the_drive_opens_only_to_it(
    boot: tuple[Path, str], tmp_path: Path
) -> None:
    directory, base = boot
    prepared = await asyncio.to_thread(prepare)
    token = agent_tokens.current(directory, HOST.host_id)
    assert token is not None and prepared.agent_token == token.fingerprint
    assert token.value not in prepared.model_dump_json(), "history sees the fingerprint only"
    on_disk = (directory / SCRIPT.lstrip("/")).read_text()
    assert token.value not in on_disk and agent_tokens.PLACEHOLDER in on_disk
    assert (await get(f"{base}/agent-tokens/{HOST.host_id}.json"))[0] == 404, "the store is never served"

    drive = await asyncio.to_thread(stage_drive, tmp_path)
    assert "bootstrap-token" not in drive.model_dump_json()
    # the drive's URL is an address: without the token, or with a guess, nothing
    status, body = await get(drive.url)
    assert status == 401 and "no agent token" in body
    before = events("wrong")
    status, body = await get(drive.url, "x" * 43)
    assert status == 403 and "not this host's current boot's" in body
    assert events("wrong") == before + 1

    status, script = await get(base + SCRIPT)  # the host's iPXE
    medium = from_script(script)
    assert status == 200 and medium.boots and medium.token == token.value and medium.boot_server == base
    status, body = await get(drive.url, medium.token)
    assert status == 200 and "bootstrap-token" in body

    before = events("refetched")
    status, again = await get(base + SCRIPT)  # someone else asks for the same boot's script
    assert status == 200 and not from_script(again).boots, "a second fetch boots nothing"
    assert token.value not in again and "already handed out" in again
    assert events("refetched") == before + 1
    status, body = await get(drive.url, medium.token)
    assert status == 403 and "handed out twice" in body, "the compromised token opens nothing"

    # the next boot: a new token, handed out again; the old one is void
    await asyncio.to_thread(prepare)
    status, script = await get(base + SCRIPT)
    fresh = from_script(script).token
    assert fresh and fresh != medium.token
    assert (await get(drive.url, medium.token))[0] == 403
    assert (await get(drive.url, fresh))[0] == 200


def test_the_agent_sends_its_token_to_the_boot_server_only() -> None:
    config = AgentConfig(host_id=HOST.host_id, token=SecretStr("t" * 43), boot_server="http://10.1.0.1:8088")
    assert headers_for(config, "http://10.1.0.1:8088/configdrive/ns.h0/a1.iso") == {
        "Authorization": "Bearer " + "t" * 43
    }
    for elsewhere in (
        "http://images.example.com/os.img",
        "https://10.1.0.1:8088/configdrive/ns.h0/a1.iso",  # another scheme is another origin
        "http://10.1.0.1:8089/x",
        "http://10.1.0.1.evil.example:8088/x",
    ):
        assert headers_for(config, elsewhere) == {}, elsewhere
    assert headers_for(config.model_copy(update={"token": None}), "http://10.1.0.1:8088/x") == {}


async def test_an_agent_whose_token_is_refused_stops_serving(boot: tuple[Path, str], tmp_path: Path) -> None:
    directory, base = boot
    drive = await asyncio.to_thread(stage_drive, tmp_path)
    old = agent_tokens.issue(directory, HOST.host_id, Medium.ISO)
    agent_tokens.issue(directory, HOST.host_id, Medium.ISO)  # the host was booted again since
    disk = tmp_path / "sda.img"
    disk.write_bytes(bytes(64 << 20))
    stopped: list[bool] = []
    agent = AgentActivities(
        AgentConfig(
            host_id=HOST.host_id,
            disks=[FileDisk(name="/dev/sda", path=disk, size_bytes=64 << 20)],
            token=SecretStr(old.value),
            boot_server=base,
        ),
        on_token_refused=lambda: stopped.append(True),
    )
    req = WriteConfigDriveRequest(device="/dev/sda", config_drive=drive)
    with pytest.raises(ApplicationError) as err:
        await asyncio.to_thread(ActivityEnvironment().run, agent.write_configdrive, req)
    assert err.value.type == "AgentTokenRefused" and not err.value.non_retryable
    assert "not this host's current boot's" in err.value.message and old.value not in err.value.message
    assert stopped == [True], "the agent was told to stop taking the host's work"
    assert disk.read_bytes() == bytes(64 << 20), "nothing written"


async def test_a_second_fetch_of_the_script_mid_provisioning_is_caught_and_the_host_boots_again(
    client: Client,
    settings: Settings,
    dc: Datacenter,  # noqa: F811
) -> None:
    host = dc.host(0)
    emu = dc.emulated[0]
    await operations.apply(client, host, settings)
    deadline = asyncio.get_running_loop().time() + 60
    while not (emu.boots and emu.boots[0].agent):
        assert asyncio.get_running_loop().time() < deadline, "the inspection ramdisk never booted"
        await asyncio.sleep(0.1)
    first = agent_tokens.current(settings.boot_dir, host.ref.host_id)
    assert first is not None and emu.boots[0].token == first.fingerprint
    before = events("refetched")
    mac = host.spec.boot_mac_address
    assert mac
    # an impostor on the provisioning network asks for the host's script while it runs its ramdisk
    status, script = await get(f"{settings.boot_server_url}/boot/{mac.replace(':', '-')}.ipxe")
    assert status == 200 and not from_script(script).boots
    assert events("refetched") == before + 1

    st = await wait_status(client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type)
    assert st.error_type is None, st.error_message
    # the compromised boot's replies were refused: the host booted again with a new token
    [event] = st.security_events
    assert "handed out twice" in event.reason and event.activity.startswith("agent.")
    ramdisks = [b for b in emu.boots if b.agent]
    assert len(ramdisks) == 2 and ramdisks[1].token not in ("", first.fingerprint), emu.boots
    assert emu.boots[-1].target == "Hdd"
    # the token is nowhere in history (its fingerprint is)
    await assert_no_secret_in_histories(client, [first.value], host.ref.workflow_id, at_least=4)
    await record(client, host.ref.workflow_id, "agent-token-refetched")
