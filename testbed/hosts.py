"""Emulated servers: a sushy-emulator system plus what its firmware would boot.

Each `EmulatedHost` watches its Redfish system. When the system powers on with a network
or virtual-media boot override, the "deploy ramdisk" comes up: an agent worker starts on
the host's queue with file-backed disks. Power off stops it; booting from disk starts no
agent. So a workflow that forgets to set PXE or power the host on gets no agent, just as
on real hardware, and the tests see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from metalflow.api.models import NIC, HostRef

log = logging.getLogger(__name__)

NETWORK_BOOT_TARGETS = {"Pxe", "Cd", "UefiHttp"}


@dataclass
class BootRecord:
    target: str  # what the firmware booted: the Redfish override target at power-on
    agent: bool


@dataclass
class EmulatedHost:
    ref: HostRef
    system_url: str  # http://127.0.0.1:PORT/redfish/v1/Systems/<uuid>
    username: str
    password: str
    mac: str
    disk_path: Path
    disk_size: int
    temporal_address: str
    temporal_namespace: str = "default"
    poll_interval: float = 0.25
    agent_tls: Any = False  # the agent's TLSConfig when the frontend requires mTLS (testbed/stack.py)
    boots: list[BootRecord] = field(default_factory=list)
    _powered: bool = False
    _pushed: int = 0  # changes pushed by the emulator's notifier so far
    _firmware: asyncio.Lock = field(default_factory=asyncio.Lock)  # one power change at a time
    _agent: asyncio.Task[None] | None = None
    _watch: asyncio.Task[None] | None = None

    @property
    def agent_running(self) -> bool:
        return self._agent is not None and not self._agent.done()

    def agent_config(self):  # type: ignore[no-untyped-def]
        from activities.agent.config import AgentConfig, FileDisk

        return AgentConfig(
            host_id=self.ref.host_id,
            disks=[
                FileDisk(
                    name="/dev/sda",
                    path=self.disk_path,
                    size_bytes=self.disk_size,
                    model="EMULATED DISK",
                    vendor="metalflow",
                    serial=f"emu-{self.ref.name}",
                    rotational=False,
                    hctl="0:0:0:0",
                )
            ],
            nics=[NIC(name="eth0", mac=self.mac, speed_gbps=10, pxe=True)],
        )

    async def _start_agent(self) -> None:
        from worker.agent import run_agent

        self._agent = asyncio.create_task(
            run_agent(self.agent_config(), self.temporal_address, self.temporal_namespace, self.agent_tls),
            name=f"agent {self.ref.host_id}",
        )
        self._agent.add_done_callback(self._agent_ended)

    def _agent_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: the agent died: %s", self.ref.name, task.exception())

    async def _stop_agent(self) -> None:
        if self._agent is not None:
            self._agent.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._agent
            self._agent = None

    async def _read(self, session: aiohttp.ClientSession) -> None:
        """A Redfish GET: the fake driver applies pending power changes when a system is read.

        A read that a pushed change overtook is dropped: its answer may be older than the push
        (a reboot's "Off", read before the "On" was pushed, would be a second boot). The next
        read repeats it; the poll is the safety net, the notifier the order of events."""
        pushed = self._pushed
        async with session.get(self.system_url) as resp:
            resp.raise_for_status()
            body = await resp.json()
        boot = body.get("Boot") or {}
        target = boot.get("BootSourceOverrideTarget") or "Hdd"
        if boot.get("BootSourceOverrideEnabled") == "Disabled":
            target = "Hdd"
        async with self._firmware:
            if self._pushed == pushed:
                await self._power_seen(body.get("PowerState", "Off"), target)

    async def observe(self, power: str, target: str) -> None:
        """A power state pushed by the emulator's notifier: act like firmware."""
        self._pushed += 1
        async with self._firmware:
            await self._power_seen(power, target)

    async def _power_seen(self, power: str, target: str) -> None:
        if power == "On" and not self._powered:
            network = target in NETWORK_BOOT_TARGETS
            self.boots.append(BootRecord(target=target, agent=network))
            log.info("%s powered on, booting %s", self.ref.name, target)
            if network:
                await self._start_agent()
        elif power != "On" and self._powered:
            log.info("%s powered off", self.ref.name)
            await self._stop_agent()
        self._powered = power == "On"

    async def watch(self) -> None:
        headers = {"Authorization": aiohttp.encode_basic_auth(self.username, self.password)}
        async with aiohttp.ClientSession(headers=headers) as session:
            while True:
                try:
                    await self._read(session)
                except (aiohttp.ClientError, TimeoutError) as err:
                    log.debug("%s: BMC read failed: %s", self.ref.name, err)
                await asyncio.sleep(self.poll_interval)

    def start(self) -> None:
        self.disk_path.parent.mkdir(parents=True, exist_ok=True)
        self._watch = asyncio.create_task(self.watch(), name=f"emulated host {self.ref.name}")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._stop_agent()
