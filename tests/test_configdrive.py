"""A config drive lives on the boot server, which serves it only to the host's agent token
(tests/test_agent_tokens.py), and only as long as its deploy attempt: the staging and removal
activities against the real boot server. That DeployHost and CleanHost call them is
test_lifecycle's part."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import requests
from temporalio.testing import ActivityEnvironment

from activities.boot import agent_tokens
from activities.configdrive import remove_configdrives, stage_configdrive
from metalflow.api.configdrive import ConfigDriveRemove, ConfigDriveRequest, ConfigDriveStaged
from metalflow.api.models import HostRef, SecretRef
from testbed.datacenter import write_secret
from testbed.processes import free_port
from worker.boot_server import start_boot_server

HOST = HostRef(namespace="ns", name="h0")


@pytest_asyncio.fixture
async def boot_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    """A boot server on a port of its own; the activities stage into its directory."""
    port, boot = free_port(), tmp_path / "boot"
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(boot))
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_URL", f"http://127.0.0.1:{port}")
    runner = await start_boot_server("127.0.0.1", port, boot)
    agent_tokens.issue(boot, HOST.host_id, agent_tokens.Medium.ISO)  # the host is in a ramdisk boot
    try:
        yield boot
    finally:
        await runner.cleanup()


async def served(drive: ConfigDriveStaged) -> bool:
    """True when the boot server hands out exactly the staged drive (to the host's agent token),
    False on 404."""
    token = agent_tokens.current(Path(os.environ["METALFLOW_BOOT_DIR"]), HOST.host_id)
    assert token is not None
    headers = {"Authorization": f"Bearer {token.value}"}
    resp = await asyncio.to_thread(requests.get, drive.url, headers=headers, timeout=10)
    assert resp.status_code in (200, 404), resp.status_code
    if resp.status_code == 404:
        return False
    assert hashlib.sha256(resp.content).hexdigest() == drive.sha256
    return True


def stage(tmp_path: Path, attempt: str) -> ConfigDriveStaged:
    path = tmp_path / "ud.yaml"
    write_secret(path, {"userData": "#cloud-config\npassword: hunter2-in-the-drive\n"})
    req = ConfigDriveRequest(host=HOST, user_data=SecretRef(name="ud", path=str(path)), attempt=attempt)
    return ActivityEnvironment().run(stage_configdrive, req)


def remove(attempt: str = "") -> None:
    ActivityEnvironment().run(remove_configdrives, ConfigDriveRemove(host=HOST, attempt=attempt))


async def test_a_drive_per_attempt_stays_until_its_attempt_ends(boot_dir: Path, tmp_path: Path) -> None:
    first = stage(tmp_path, "attempt-1")
    # the staging retried within the attempt (its result lost with a worker): the same URL,
    # so whatever the attempt already handed out keeps working
    again = stage(tmp_path, "attempt-1")
    assert again.url == first.url and await served(again)
    # the next attempt gets a drive (and a URL) of its own
    second = stage(tmp_path, "attempt-2")
    assert second.url != first.url and await served(second)

    remove("attempt-1")  # the first attempt's DeployHost ends
    assert not await served(again), "the ended attempt's URL must answer 404"
    assert await served(second), "another attempt's drive is not touched"
    remove("attempt-1")  # idempotent: a retried removal is fine

    remove()  # deprovision: every drive of the host
    assert not await served(second)
    assert not (boot_dir / "configdrive" / HOST.host_id).exists()


async def test_drives_from_before_per_attempt_names_are_removed_with_the_host_only(
    boot_dir: Path, tmp_path: Path
) -> None:
    """The old layout, one `<host id>-<token>.iso` per host, never removed: staging and
    deprovisioning take the host's own, and not host h0-1's."""
    legacy = boot_dir / "configdrive"  # the boot server made it
    mine, neighbour = (legacy / f"{host}-{secrets.token_urlsafe(16)}.iso" for host in ("ns.h0", "ns.h0-1"))
    for path in (mine, neighbour):
        path.write_bytes(b"old drive")
    stage(tmp_path, "attempt-1")
    assert not mine.exists() and neighbour.exists()
    mine.write_bytes(b"old drive")
    remove()
    assert not mine.exists() and neighbour.exists()


def test_staging_without_an_attempt_keys_on_the_calling_run(boot_dir: Path, tmp_path: Path) -> None:
    """What a DeployHost recorded before per-attempt drives sends: its own run is the attempt."""
    run_id = ActivityEnvironment().info.workflow_run_id
    assert f"/configdrive/{HOST.host_id}/{run_id}." in stage(tmp_path, "").url
