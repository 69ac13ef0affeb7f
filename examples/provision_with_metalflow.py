"""Provision the hosts of a hostfile with metalflow's client API and wait until each is done.

    python examples/provision_with_metalflow.py hosts.yaml [--timeout 1800]

What `metalflow provision hosts.yaml --wait` does, in a few lines of your own script. Temporal's
address, namespace and task queue come from the environment as for the CLI
(METALFLOW_TEMPORAL_ADDRESS, METALFLOW_TEMPORAL_NAMESPACE, METALFLOW_TASK_QUEUE). Exit status 0
when every host is provisioned (or available, without an image), 1 if any is in error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from metalflow.client import operations
from metalflow.client.hostfile import load_hosts
from metalflow.runtime.settings import get_settings
from metalflow.runtime.temporal import connect


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hostfile", type=Path)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for all hosts")
    args = parser.parse_args()
    settings = get_settings()
    # Secrets in the hostfile are kept under the state directory (0600); workflows get references
    hosts = load_hosts(args.hostfile, settings.state_dir / "secrets", check=operations.check_spec)
    client = await connect(settings)
    for host in hosts:
        applied = await operations.apply(client, host, settings)  # start, or update a running host
        print(
            f"{host.ref.namespace}/{host.ref.name}: {'started' if applied.started else 'updated'}", flush=True
        )
    done = await operations.wait_settled(client, hosts, timeout=args.timeout)
    for host in hosts:
        st = done[host.ref.workflow_id]
        print(
            f"{host.ref.namespace}/{host.ref.name}: {st.provisioning.state.value} {st.error_message}".rstrip()
        )
    return 1 if any(st.error_type is not None for st in done.values()) else 0


if __name__ == "__main__":
    code = asyncio.run(main())
    # Exit without interpreter teardown: the Temporal client's Rust threads can abort a finalizing
    # interpreter (temporalio/sdk-python#300), turning success into SIGABRT. metalflow's CLI does so too.
    sys.stdout.flush()
    os._exit(code)
