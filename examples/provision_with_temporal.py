"""Provision one host with the plain Temporal Python SDK: of metalflow, only its payload models.

    python examples/provision_with_temporal.py host.json [--address localhost:7233]
        [--namespace default] [--task-queue metalflow] [--timeout 1800]

host.json is HostWorkflow's input, `{"ref": {"namespace": ..., "name": ...}, "spec": {...}}`
(the same file `temporal workflow start --input-file` takes; Secrets by reference: a name, and a
path for a local file). The workflow id is `host/<namespace>/<name>`; a host already running gets
the spec through the `update_spec` Update, as metalflow's own client does. Its status is the
`status` Query, polled until the host is provisioned or reports an error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from metalflow.api.host import HostWorkflowInput  # the payload models, nothing else
from metalflow.api.models import HostStatus, ProvisioningState


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="HostWorkflow input (JSON)")
    parser.add_argument("--address", default="localhost:7233")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", default="metalflow")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    inp = HostWorkflowInput.model_validate_json(args.input.read_text())
    client = await Client.connect(
        args.address, namespace=args.namespace, data_converter=pydantic_data_converter
    )
    workflow_id = f"host/{inp.ref.namespace}/{inp.ref.name}"
    handle: WorkflowHandle[object, HostStatus]
    try:
        handle = await client.start_workflow(
            "HostWorkflow", inp, id=workflow_id, task_queue=args.task_queue, result_type=HostStatus
        )
        print(f"{workflow_id}: started", flush=True)
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(workflow_id, result_type=HostStatus)
        await handle.execute_update("update_spec", inp.spec)
        print(f"{workflow_id}: spec updated", flush=True)
    deadline, seen = time.monotonic() + args.timeout, None
    while True:
        try:
            st = await handle.query("status", result_type=HostStatus)
        except RPCError as err:  # e.g. no worker has polled the queue yet: ask again
            print(f"{workflow_id}: status not available yet ({err.message})", flush=True)
            await asyncio.sleep(1)
            continue
        if st.provisioning.state != seen:
            seen = st.provisioning.state
            print(f"{workflow_id}: {seen.value}", flush=True)
        if st.error_type is not None:
            print(f"{workflow_id}: {st.error_type.value}: {st.error_message}", flush=True)
            return 1
        if st.provisioning.state == ProvisioningState.PROVISIONED:
            return 0
        if time.monotonic() > deadline:
            print(f"{workflow_id}: not provisioned after {args.timeout:.0f}s", flush=True)
            return 1
        await asyncio.sleep(1)


if __name__ == "__main__":
    code = asyncio.run(main())
    # Exit without interpreter teardown: the Temporal client's Rust threads can abort a finalizing
    # interpreter (temporalio/sdk-python#300), turning success into SIGABRT. metalflow's CLI does so too.
    sys.stdout.flush()
    os._exit(code)
