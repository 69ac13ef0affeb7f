"""A small datacenter on loopback: BMCs (sushy-emulator), a boot server, an OS image, servers.

Shared by `make demo`, the integration tests and the benchmarks, so all three exercise the
same real parts: Redfish over HTTP with auth, the image served over HTTP, agents that come
up only when the BMC network-boots a server.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from metalflow.api.boot import ARCHITECTURES
from metalflow.api.models import (
    BMCDetails,
    ChecksumType,
    Host,
    HostRef,
    HostSpec,
    ImageFormat,
    ImageSpec,
    RootDeviceHints,
    SecretRef,
)
from metalflow.runtime.settings import Settings
from testbed.hosts import EmulatedHost
from testbed.images import BuiltImage, build_raw_image
from testbed.processes import free_port
from testbed.sushy import FakeSystem, SushyEmulator, power_delay_from_env, start_sushy

DISK_BYTES = 8 << 30  # sparse


def write_secret(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f)


@dataclass
class Datacenter:
    settings: Settings
    hosts: int = 3
    password: str = field(default_factory=lambda: uuid.uuid4().hex, repr=False)
    prefix: str = "node"
    namespace: str = "default"
    image_mib: int = 32
    disk_bytes: int = DISK_BYTES  # each emulated host's one disk (/dev/sda, sparse)
    # the emulator's power delay (testbed/sushy.py): its own 1-11 s unless the environment says
    power_delay: tuple[int, int] | None = field(default_factory=power_delay_from_env)
    agent_tls: Any = False  # the emulated agents' TLSConfig for an mTLS frontend (Stack.agent_tls())
    boot_tls: Any = None  # the boot server's HTTPS (worker.boot_server.BootServerTLS), if any
    sushy: SushyEmulator | None = None
    image: BuiltImage | None = None
    emulated: list[EmulatedHost] = field(default_factory=list)
    systems: list[FakeSystem] = field(default_factory=list)
    _boot: web.AppRunner | None = None
    _notify: web.AppRunner | None = None
    _notify_port: int = 0

    @property
    def state(self) -> Path:
        return self.settings.state_dir.resolve()

    @property
    def credentials(self) -> SecretRef:
        return SecretRef(
            name="bmc",
            namespace=self.namespace,
            path=str(self.state / "secrets" / self.namespace / "bmc.yaml"),
        )

    async def __aenter__(self) -> Datacenter:
        from worker.boot_server import start_boot_server

        names = [f"{self.prefix}-{i}" for i in range(self.hosts)]
        self.systems = [
            FakeSystem(
                uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"metalflow/{self.state}/{n}")),
                name=n,
                mac=f"52:54:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}",
            )
            for i, n in enumerate(names)
        ]
        write_secret(Path(str(self.credentials.path)), {"username": "admin", "password": self.password})
        # The emulator pushes every system change here: a reboot's brief "Off" is never missed.
        self._notify = await self._start_notify_receiver()
        notify_url = f"http://127.0.0.1:{self._notify_port}/"
        self.sushy = await asyncio.to_thread(
            start_sushy,
            self.state / "sushy",
            self.systems,
            "admin",
            self.password,
            None,
            "full",
            notify_url,
            self.power_delay,
        )
        boot_dir = self.settings.boot_dir.resolve()
        self.image = await asyncio.to_thread(
            build_raw_image, boot_dir / "images" / "os.img", self.image_mib, "os"
        )
        # The emulated base deploy ISO: each virtual-media host's ISO is made from it (the BMC
        # downloads that on insert; the emulated host does not read it).
        from activities.configdrive import build_iso

        iso = build_iso({"metalflow/README": b"emulated metalflow deploy ramdisk\n"}, label="mf-deploy")
        (boot_dir / "deploy.iso").write_bytes(iso)
        # The EFI iPXE a UEFI HTTP boot is sent to (emulated firmware never runs it: bytes suffice).
        (boot_dir / ARCHITECTURES["x86_64"].uefi_ipxe).write_bytes(b"MZ emulated EFI iPXE\n")
        port = int(self.settings.boot_server_url.rsplit(":", 1)[1])
        self._boot = await start_boot_server("127.0.0.1", port, boot_dir, self.boot_tls)
        for host, system in zip(self.all_hosts(), self.systems, strict=True):
            emu = EmulatedHost(
                ref=host.ref,
                system_url=self.sushy.system_url(system.uuid),
                username="admin",
                password=self.password,
                mac=system.mac,
                disk_path=self.state / "disks" / f"{host.ref.name}.img",
                disk_size=self.disk_bytes,
                temporal_address=self.settings.temporal_address,
                temporal_namespace=self.settings.temporal_namespace,
                agent_tls=self.agent_tls,
                boot_server_url=self.settings.boot_server_url,  # its firmware fetches its boot medium
                # The notifier pushes every change (the BMC activities read the systems, which applies
                # pending power changes), so the poll is only a safety net: ~10 reads/s at most.
                poll_interval=0.25 if self.hosts <= 8 else max(1.0, self.hosts / 10),
            )
            emu.start()
            self.emulated.append(emu)
        return self

    async def _start_notify_receiver(self) -> web.AppRunner:
        by_uuid = {s.uuid: i for i, s in enumerate(self.systems)}

        async def notified(request: web.Request) -> web.Response:
            system = await request.json()
            index = by_uuid.get(system.get("uuid", ""))
            if index is not None and index < len(self.emulated):
                await self.emulated[index].observe(
                    system.get("power_state", "Off"), system.get("boot_device", "Hdd")
                )
            return web.Response(status=204)

        app = web.Application()
        app.router.add_route("*", "/", notified)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._notify_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", self._notify_port).start()
        return runner

    async def __aexit__(self, *exc: Any) -> None:
        for emu in self.emulated:
            await emu.stop()
        if self._notify is not None:
            await self._notify.cleanup()
        if self._boot is not None:
            await self._boot.cleanup()
        if self.sushy is not None:
            await asyncio.to_thread(self.sushy.stop)

    def image_spec(self) -> ImageSpec:
        assert self.image is not None
        return ImageSpec(
            url=f"{self.settings.boot_server_url.rstrip('/')}/images/{self.image.path.name}",
            checksum=self.image.sha256,
            checksum_type=ChecksumType.SHA256,
            format=ImageFormat.RAW,
        )

    def host(self, index: int, **spec_changes: Any) -> Host:
        system = self.systems[index]
        assert self.sushy is not None
        spec = HostSpec(
            bmc=BMCDetails(address=self.sushy.system_address(system.uuid), credentials=self.credentials),
            boot_mac_address=system.mac,
            online=True,
            image=self.image_spec() if self.image else None,
            root_device_hints=RootDeviceHints(min_size_gigabytes=4),
        )
        return Host(
            ref=HostRef(namespace=self.namespace, name=system.name),
            spec=spec.model_copy(update=spec_changes),
        )

    def all_hosts(self) -> list[Host]:
        return [self.host(i) for i in range(len(self.systems))]

    def manifests(self) -> list[dict[str, Any]]:
        """The datacenter as a metal3 hostfile: Secret + BareMetalHosts."""
        from metalflow.api.bmh import manifest_from_host

        docs: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "bmc", "namespace": self.namespace},
                "stringData": {"username": "admin", "password": self.password},
            }
        ]
        docs += [manifest_from_host(h) for h in self.all_hosts()]
        return docs
