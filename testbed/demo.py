"""`make demo` (`python -m testbed.demo`, from a checkout): a datacenter on one machine,
provisioned through the real Temporal server.

Starts the Temporal dev server (SQLite under .metalflow/), then the loopback datacenter
(sushy-emulator with one fake system per host, the boot server, emulated servers whose
agents come up when their BMC network-boots them), the control-plane worker, and provisions
every host from a generated metal3 hostfile exactly as `metalflow provision --wait` would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import yaml
from rich.console import Console

from metalflow.client import operations
from metalflow.client.hostfile import load_hosts
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.processes import port_open
from testbed.temporal import start_dev_server

console = Console()


async def run_demo(settings: Settings, hosts: int = 3, keep_running: bool = True) -> int:
    from metalflow.cli.main import watch_until_settled
    from metalflow.runtime.temporal import connect
    from worker.control import build_worker

    port_text = settings.temporal_address.rpartition(":")[2]
    temporal_port = int(port_text)
    busy = [p for p in (temporal_port, 8233) if port_open("127.0.0.1", p)]
    if busy:
        console.print(
            f"[red]something already listens on port(s) {busy}[/red]: stop it (another demo?) "
            "or set METALFLOW_TEMPORAL_ADDRESS to a free port"
        )
        return 1
    # sushy logs each fallback to basic auth (the emulator has no session service) as an error.
    logging.getLogger("sushy").setLevel(logging.CRITICAL)
    # The in-process activities read settings from the environment: make them agree.
    os.environ["METALFLOW_STATE_DIR"] = str(settings.state_dir.resolve())
    os.environ["METALFLOW_BOOT_DIR"] = str(settings.boot_dir.resolve())
    os.environ["METALFLOW_BOOT_SERVER_URL"] = settings.boot_server_url
    state = settings.state_dir.resolve()
    with contextlib.ExitStack() as stack:
        console.rule("metalflow demo")
        console.print(f"starting the Temporal dev server (SQLite {state / 'temporal.db'}) ...")
        temporal = start_dev_server(state, port=temporal_port, ui_port=8233)
        stack.callback(temporal.stop)
        console.print(
            f"starting sushy-emulator --fake with {hosts} systems, the boot server, the servers ..."
        )
        async with Datacenter(settings, hosts=hosts, prefix="demo", image_mib=64) as dc:
            hostfile = state / "demo-hosts.yaml"
            fd = os.open(hostfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump_all(dc.manifests(), f, sort_keys=False)
            parsed = load_hosts(hostfile, state / "secrets")
            client = await connect(settings)
            with ThreadPoolExecutor(max_workers=32) as executor:
                async with build_worker(client, settings, executor):
                    for host in parsed:
                        applied = await operations.apply(client, host, settings)
                        verb = "started" if applied.started else "updated"
                        console.print(f"{verb} workflow {host.ref.workflow_id}")
                    console.print(
                        "Temporal UI: [bold]http://localhost:8233[/bold] "
                        '(try the query  WorkflowType="HostWorkflow")'
                    )
                    statuses = await watch_until_settled(settings, parsed, timeout=900)
                    console.print()
                    failed = {w: s for w, s in statuses.items() if s.error_type is not None}
                    for wid, st in failed.items():
                        console.print(f"[red]{wid}: {st.error_type}: {st.error_message}[/red]")
                    console.print(
                        f"[green]{len(statuses) - len(failed)} of {len(statuses)} hosts provisioned[/green]"
                        f" from {hostfile}. In another terminal:\n"
                        "  .venv/bin/metalflow hosts\n"
                        "  .venv/bin/metalflow status demo-0 -o yaml\n"
                        "  .venv/bin/temporal workflow list --query 'HostState=\"provisioned\"'\n"
                        "  .venv/bin/metalflow deprovision demo-0"
                    )
                    if keep_running:
                        console.print(
                            "[bold]Running until Ctrl-C, which stops every process the demo started.[/bold]"
                        )
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.Event().wait()
        console.print("stopped every process the demo started")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m testbed.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--no-wait", action="store_true", help="exit once the hosts are provisioned")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = asyncio.run(run_demo(Settings(), hosts=args.hosts, keep_running=not args.no_wait))
    except KeyboardInterrupt:
        code = 130
    # As the CLI does: skip interpreter teardown, which the Temporal client's threads can abort.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
