"""`make demo`: a datacenter on one machine, provisioned through the real Temporal server.

Starts the Temporal dev server (SQLite under .metalflow/), sushy-emulator with one fake system
per host, the boot server, the control-plane worker and one emulated server per host (its
agent comes up when the BMC powers it on with a network boot), then provisions every host
from a generated hostfile, exactly as `metalflow provision` would, with a live table.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets as pysecrets
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from rich.console import Console

from metalflow import operations
from metalflow.devenv.hosts import EmulatedHost
from metalflow.devenv.images import build_raw_image
from metalflow.devenv.processes import Process, port_open, wait_for
from metalflow.devenv.temporal import start_dev_server
from metalflow.hostfile import load_hosts
from metalflow.settings import Settings

console = Console()
DISK_BYTES = 8 << 30  # sparse: costs only what is written


def _hostfile(
    path: Path,
    names: list[str],
    macs: list[str],
    addresses: list[str],
    password: str,
    image_url: str,
    sha: str,
) -> None:
    docs: list[dict[str, object]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "demo-bmc", "namespace": "default"},
            "stringData": {"username": "admin", "password": password},
        }
    ]
    for name, mac, address in zip(names, macs, addresses, strict=True):
        docs.append(
            {
                "apiVersion": "metal3.io/v1alpha1",
                "kind": "BareMetalHost",
                "metadata": {"name": name, "namespace": "default", "labels": {"demo": "true"}},
                "spec": {
                    "online": True,
                    "bootMACAddress": mac,
                    "bmc": {"address": address, "credentialsName": "demo-bmc"},
                    "rootDeviceHints": {"minSizeGigabytes": 4},
                    "automatedCleaningMode": "metadata",
                    "image": {"url": image_url, "checksum": sha, "checksumType": "sha256", "format": "raw"},
                },
            }
        )
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


async def run_demo(settings: Settings, hosts: int = 3, keep_running: bool = True) -> int:
    from metalflow.client import connect
    from metalflow.devenv.sushy import FakeSystem, start_sushy
    from worker.control import build_worker

    state = settings.state_dir.resolve()
    boot_dir = settings.boot_dir.resolve()
    _, _, port_text = settings.temporal_address.rpartition(":")
    temporal_port = int(port_text)
    if port_open("127.0.0.1", temporal_port):
        console.print(
            f"[red]something already listens on 127.0.0.1:{temporal_port}[/red]; stop it "
            "(another demo?) or set METALFLOW_TEMPORAL_ADDRESS to a free port"
        )
        return 1
    stack = contextlib.ExitStack()
    tasks: list[asyncio.Task[None]] = []
    emulated: list[EmulatedHost] = []
    try:
        console.rule("metalflow demo")
        console.print("starting the Temporal dev server (SQLite: .metalflow/temporal.db) ...")
        temporal = start_dev_server(state, port=temporal_port, ui_port=8233)
        stack.callback(temporal.stop)

        names = [f"demo-{i}" for i in range(hosts)]
        macs = [f"52:54:00:6d:66:{i:02x}" for i in range(hosts)]
        systems = [
            FakeSystem(uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"metalflow-demo/{n}")), name=n, mac=m)
            for n, m in zip(names, macs, strict=True)
        ]
        secrets_dir = state / "secrets"
        hostfile = state / "demo-hosts.yaml"
        console.print(f"starting sushy-emulator --fake with {hosts} systems ...")
        # The BMC password is made once per demo and lives only in the local Secret file.
        password = pysecrets.token_urlsafe(12)
        sushy = start_sushy(state / "sushy", systems, "admin", password)
        stack.callback(sushy.stop)

        console.print("building the demo OS image and starting the boot server ...")
        image = build_raw_image(boot_dir / "images" / "demo-os.img", size_mib=64, label="demo-os")
        boot_port = int(settings.boot_server_url.rsplit(":", 1)[1])
        boot = Process(
            "boot server",
            [
                sys.executable,
                "-m",
                "metalflow",
                "boot-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(boot_port),
                "--boot-dir",
                str(boot_dir),
            ],
            state / "logs" / "boot-server.log",
        )
        stack.callback(boot.stop)

        def boot_up() -> bool:
            boot.check_alive()
            return port_open("127.0.0.1", boot_port)

        wait_for(boot_up, 30, "the boot server")

        _hostfile(
            hostfile,
            names,
            macs,
            [sushy.system_address(s.uuid) for s in systems],
            password,
            f"{settings.boot_server_url}/images/demo-os.img",
            image.sha256,
        )
        hostfile.chmod(0o600)
        parsed = load_hosts(hostfile, secrets_dir)

        client = await connect(settings)
        executor = ThreadPoolExecutor(max_workers=32)
        stack.callback(executor.shutdown, wait=False, cancel_futures=True)
        worker = build_worker(client, settings, executor)
        tasks.append(asyncio.create_task(worker.run()))
        for host, system in zip(parsed, systems, strict=True):
            emu = EmulatedHost(
                ref=host.ref,
                system_url=sushy.system_url(system.uuid),
                username="admin",
                password=password,
                mac=system.mac,
                disk_path=state / "hosts" / host.ref.name / "disk.img",
                disk_size=DISK_BYTES,
                temporal_address=settings.temporal_address,
            )
            emu.start()
            emulated.append(emu)

        for host in parsed:
            applied = await operations.apply(client, host, settings)
            console.print(f"{'started' if applied.started else 'updated'} workflow {host.ref.workflow_id}")
        console.print(
            'Temporal UI: [bold]http://localhost:8233[/bold]  (filter: WorkflowType="HostWorkflow")'
        )

        from metalflow.cli import watch_until_settled

        statuses = await watch_until_settled(settings, parsed, timeout=900)
        failed = {w: s for w, s in statuses.items() if s.error_type is not None}
        for wid, st in failed.items():
            console.print(f"[red]{wid}: {st.error_type}: {st.error_message}[/red]")
        console.print(
            f"[green]{len(statuses) - len(failed)} of {len(statuses)} hosts provisioned[/green]. Try:\n"
            f"  .venv/bin/metalflow hosts\n"
            f"  .venv/bin/metalflow status demo-0 -o yaml\n"
            f"  .venv/bin/temporal workflow list --query 'HostState=\"provisioned\"'\n"
            f"  .venv/bin/metalflow deprovision demo-0"
        )
        if keep_running:
            console.print(
                "[bold]Everything keeps running; Ctrl-C stops every process the demo started.[/bold]"
            )
            await asyncio.Event().wait()
        return 1 if failed else 0
    finally:
        for emu in emulated:
            await emu.stop()
        for t in tasks:
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        stack.close()
        console.print("stopped every process the demo started")
