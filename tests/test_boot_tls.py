"""HTTPS on the boot path (issue #27, item 5): ramdisk agents fetch a host's secrets from the boot
server over HTTPS, checking it against the CA their boot medium carried (the host's ISO; for a
PXE host, fetched where its iPXE script says). Firmware keeps plain HTTP: Debian's iPXE has no
HTTPS (README, Security model)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio
import requests
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from test_lifecycle import wait_status
from tests_support import activity_results, step_histories

from activities.agent import configdrive as agent_configdrive
from metalflow.api.configdrive import CONFIGDRIVE_STAGE, ConfigDriveStaged
from metalflow.api.models import BMCDetails
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.processes import free_port
from testbed.tls import TestCA
from worker.boot_server import BootServerTLS
from worker.control import build_worker


@pytest_asyncio.fixture
async def tls_dc(
    client: Client, settings: Settings, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Datacenter, Settings]]:
    ca = TestCA(tmp_path / "pki", name="metalflow boot server test CA")
    issued = ca.issue("boot-server")
    port = free_port()
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_TLS_URL", f"https://127.0.0.1:{port}")
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_CA", str(ca.cert))
    tls_settings = Settings()
    tls = BootServerTLS(port, issued.cert, issued.key)
    async with Datacenter(tls_settings, hosts=2, namespace=ns, boot_tls=tls) as datacenter:
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, tls_settings, executor):
                yield datacenter, tls_settings


async def test_agents_fetch_secrets_over_https_checked_against_their_boot_mediums_ca(
    client: Client, tls_dc: tuple[Datacenter, Settings]
) -> None:
    dc, settings = tls_dc
    pxe = dc.host(0)
    address = dc.host(1).spec.bmc.address.replace("redfish+http://", "redfish-virtualmedia+http://")
    vmedia = dc.host(1, bmc=BMCDetails(address=address, credentials=dc.credentials))
    for host in (pxe, vmedia):
        await operations.apply(client, host, settings)
    for host in (pxe, vmedia):
        st = await wait_status(
            client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type
        )
        assert st.error_type is None, st.error_message
        [drive] = activity_results(
            await step_histories(client, host.ref.workflow_id), CONFIGDRIVE_STAGE, ConfigDriveStaged
        )
        assert drive.url.startswith(settings.boot_server_tls_url + "/configdrive/"), drive.url
    # each ramdisk found the CA on its medium: the ISO's, or fetched where the iPXE script said
    assert settings.boot_server_ca is not None
    ca = settings.boot_server_ca.read_bytes()
    assert [b.target for b in dc.emulated[0].boots if b.agent] == ["Pxe"]
    assert [b.target for b in dc.emulated[1].boots if b.agent] == ["Cd"]
    for emu in dc.emulated:
        assert emu.disk_path.with_name(f"{emu.ref.name}-boot-ca.pem").read_bytes() == ca
    served = await asyncio.to_thread(requests.get, f"{settings.boot_server_url}/boot-ca.pem", timeout=10)
    assert served.status_code == 200 and served.content == ca


async def test_an_agent_without_the_boot_servers_ca_fetches_nothing(
    tls_dc: tuple[Datacenter, Settings],
) -> None:
    _, settings = tls_dc
    drive = ConfigDriveStaged(
        url=f"{settings.boot_server_tls_url}/configdrive/x/y.iso", sha256="0" * 64, size_bytes=1
    )
    # the system's trust store does not know the test CA
    with pytest.raises(ApplicationError, match="CERTIFICATE_VERIFY_FAILED") as err:
        await asyncio.to_thread(agent_configdrive.fetch, drive, {}, True)
    assert err.value.type == "ConfigDriveFetchError"
    with pytest.raises(ssl.SSLError):  # plain TLS clients too: it is a real certificate check
        ctx = ssl.create_default_context()
        reader_writer = await asyncio.open_connection(
            "127.0.0.1", int(settings.boot_server_tls_url.rsplit(":", 1)[1]), ssl=ctx
        )
        reader_writer[1].close()
