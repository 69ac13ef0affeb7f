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
    token: str = ""  # the fingerprint of the agent token its boot medium carried


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
    # The boot server the firmware fetches its boot medium from (testbed/firmware_boot.py); empty:
    # the ramdisk comes up holding no agent token (tests of the agent alone).
    boot_server_url: str = ""
    # Tests: while set and cleared, a booted ramdisk's agent waits before it polls (the host's
    # queue is then someone else's alone: tests/test_agent_replies.py's rogue poller).
    agent_gate: asyncio.Event | None = None
    boots: list[BootRecord] = field(default_factory=list)
    _powered: bool = False
    _pushed: int = 0  # changes pushed by the emulator's notifier so far
    _firmware: asyncio.Lock = field(default_factory=asyncio.Lock)  # one power change at a time
    _agent: asyncio.Task[None] | None = None
    _watch: asyncio.Task[None] | None = None

    @property
    def agent_running(self) -> bool:
        return self._agent is not None and not self._agent.done()

    def agent_config(self, medium: Any = None):  # type: ignore[no-untyped-def]
        from activities.agent.config import AgentConfig, FileDisk

        ca = None
        if medium is not None and medium.boot_ca:  # where the ramdisk's init keeps it
            ca = self.disk_path.with_name(f"{self.ref.name}-boot-ca.pem")
            ca.write_bytes(medium.boot_ca)
        return AgentConfig(
            boot_server_ca=ca,
            host_id=self.ref.host_id,
            token=medium.token if medium is not None and medium.token else None,
            boot_server=medium.boot_server if medium is not None else "",
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

    async def _boot_medium(self, target: str) -> Any:
        """What the firmware boots (testbed/firmware_boot.py): whether a ramdisk comes up, its token."""
        from testbed import firmware_boot

        if not self.boot_server_url:
            return firmware_boot.Medium(boots=True)
        try:
            if target == "Cd":
                headers = {"Authorization": aiohttp.encode_basic_auth(self.username, self.password)}
                async with aiohttp.ClientSession(headers=headers) as session:
                    return await firmware_boot.vmedia(session, self.system_url)
            return await firmware_boot.pxe(self.boot_server_url, self.mac, self.system_url.rsplit("/", 1)[1])
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("%s: the firmware found no boot medium (%s): nothing boots", self.ref.name, err)
            return firmware_boot.Medium(boots=False)

    async def _start_agent(self, medium: Any = None) -> None:
        from worker.agent import run_agent

        async def agent() -> None:
            if self.agent_gate is not None:
                await self.agent_gate.wait()
            config = self.agent_config(medium)
            await run_agent(config, self.temporal_address, self.temporal_namespace, self.agent_tls)

        self._agent = asyncio.create_task(
            agent(),
            name=f"agent {self.ref.host_id}",
        )
        self._agent.add_done_callback(self._agent_ended)

    def _agent_ended(self, task: asyncio.Task[None]) -> None:
        from worker.agent import TokenRefused

        if task.cancelled() or task.exception() is None:
            return
        if isinstance(task.exception(), TokenRefused):  # as the ramdisk's init: it stays stopped
            log.warning("%s: the agent stopped: its agent token was refused", self.ref.name)
        else:
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
            from activities.boot.agent_tokens import fingerprint

            medium = await self._boot_medium(target) if target in NETWORK_BOOT_TARGETS else None
            if medium is None or not medium.boots:
                self.boots.append(BootRecord(target=target, agent=False))
                log.info("%s powered on, booting %s (no deploy ramdisk)", self.ref.name, target)
            else:
                token = fingerprint(medium.token) if medium.token else ""
                self.boots.append(BootRecord(target=target, agent=True, token=token))
                log.info("%s powered on, booting %s", self.ref.name, target)
                await self._start_agent(medium)
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
