"""The emulated server's firmware follows its BMC's power changes in the order they happened.

It hears of them twice: the emulator's notifier pushes every change, and a poll reads the
system now and then. A poll read the push overtook is older than what was pushed; acted on,
a reboot's "Off" read just before the reboot's "On" was pushed would power the server off
again, and the next read would count a second boot that no BMC call caused. Only a small
Redfish stand-in here, no emulator and no Temporal: the ordering is the test bed's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest_asyncio
from aiohttp import web

from metalflow.api.models import HostRef
from testbed.hosts import BootRecord, EmulatedHost
from testbed.processes import free_port


@dataclass
class System:
    """One Redfish system whose next read can be held after it has taken its snapshot."""

    power: str = "On"
    reads: int = 0
    hold_next: bool = False
    held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def get(self, request: web.Request) -> web.Response:
        self.reads += 1
        body = {
            "PowerState": self.power,
            "Boot": {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Once"},
        }
        if self.hold_next:
            self.hold_next = False
            self.held.set()
            await self.release.wait()
        return web.json_response(body)


async def until(what: str, check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def bmc() -> AsyncIterator[tuple[System, str]]:
    system = System()
    app = web.Application()
    app.router.add_get("/redfish/v1/Systems/s1", system.get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield system, f"http://127.0.0.1:{port}/redfish/v1/Systems/s1"
    finally:
        system.release.set()
        await runner.cleanup()


async def test_a_poll_read_overtaken_by_a_pushed_change_is_not_a_second_boot(
    bmc: tuple[System, str], tmp_path: Path
) -> None:
    system, url = bmc
    emu = EmulatedHost(
        ref=HostRef(name="h0"),
        system_url=url,
        username="admin",
        password="password",
        mac="52:54:00:00:00:01",
        disk_path=tmp_path / "h0.img",
        disk_size=1 << 20,
        temporal_address="127.0.0.1:1",  # booting from disk starts no agent: never dialled
        poll_interval=0.01,
    )
    emu.start()
    try:
        await until("the first boot", lambda: len(emu.boots) == 1)
        # a reboot: the next poll reads "Off" and its answer is held
        system.power, system.hold_next = "Off", True
        await until("a poll read of Off in flight", system.held.is_set)
        # meanwhile the notifier pushes the reboot, "Off" then "On": one boot
        await emu.observe("Off", "Hdd")
        system.power = "On"
        await emu.observe("On", "Hdd")
        assert emu.boots == [BootRecord("Hdd", agent=False)] * 2
        # the stale read comes back; the polls after it read "On" again
        reads = system.reads
        system.release.set()
        await until("two more polls", lambda: system.reads >= reads + 2)
        assert emu.boots == [BootRecord("Hdd", agent=False)] * 2, "a stale read counted a boot"
    finally:
        await emu.stop()
