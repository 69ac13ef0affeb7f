"""The README's operator table with tctl 1.18 (issue 24): the older Temporal CLI, built from its Go
module (scripts/build-tctl.sh), against the dev server. tctl has no Updates: spec changes
(reprovision, deprovision) go through `temporal workflow update` or metalflow (tests/test_cli.py);
everything else an operator does is a Signal or a Query and works with tctl as it is."""

from __future__ import annotations

import asyncio
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.client import Client

from metalflow.api.host import HostWorkflowInput
from metalflow.api.models import HostStatus
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.temporal import tctl
from worker.control import build_worker


async def run(*argv: str) -> str:
    done = await asyncio.to_thread(subprocess.run, list(argv), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def query_result(out: str) -> dict[str, Any]:
    """tctl prints `Query result:` and then the results as JSON (one a query argument)."""
    results = json.loads(out[out.index("[") :])
    return dict(results[0])


async def test_tctl_starts_finds_queries_and_signals_a_host(
    client: Client, settings: Settings, tmp_path: Path, ns: str
) -> None:
    workflow = [tctl(), "--address", settings.temporal_address, "--namespace", "default", "workflow"]
    async with Datacenter(settings, hosts=1, prefix="tctl", namespace=ns) as dc:
        host = dc.host(0)
        wid = host.ref.workflow_id
        (tmp_path / "host.json").write_text(
            HostWorkflowInput(ref=host.ref, spec=host.spec).model_dump_json(by_alias=True)
        )

        async def query(kind: str = "status") -> dict[str, Any]:
            return query_result(await run(*workflow, "query", "--workflow_id", wid, "--query_type", kind))

        async def until(what: str, check: Any, timeout: float = 180) -> dict[str, Any]:
            deadline = asyncio.get_running_loop().time() + timeout
            while not check(st := await query()):
                assert asyncio.get_running_loop().time() < deadline, f"{what}; last {st}"
                await asyncio.sleep(0.3)
            return st

        async def signal(name: str) -> None:
            await run(*workflow, "signal", "--workflow_id", wid, "--name", name)

        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                await run(
                    *workflow, "start", "--taskqueue", settings.task_queue, "--workflow_type", "HostWorkflow",
                    "--workflow_id", wid, "--input_file", str(tmp_path / "host.json"),
                )  # fmt: skip
                st = await until(
                    "provisioned",
                    lambda s: s["provisioning"]["state"] == "provisioned" and not s["currentStep"],
                )
                assert st["poweredOn"] is True and dc.password not in json.dumps(st)
                spec = await query("spec")
                assert host.spec.image is not None and spec["image"]["url"] == host.spec.image.url
                assert dc.password not in json.dumps(spec)  # secret references only

                listed = await run(
                    *workflow, "list", "--query",
                    f'WorkflowType="HostWorkflow" AND HostState="provisioned" AND HostNamespace="{ns}"',
                )  # fmt: skip
                assert wid in listed, listed
                failed = await run(
                    *workflow, "list", "--query", f'ErrorType="provisioning error" AND HostNamespace="{ns}"'
                )
                assert wid not in failed, failed

                await signal("pause")
                await until("paused", lambda s: s["paused"] is True, 30)
                await signal("resume")
                await until("resumed", lambda s: s["paused"] is False, 30)
                await signal("detach")
                await until(
                    "detached", lambda s: s["detached"] is True and s["operationalStatus"] == "detached", 30
                )
                await signal("attach")
                await until(
                    "attached", lambda s: s["detached"] is False and s["operationalStatus"] == "OK", 30
                )

                boots = len(dc.emulated[0].boots)
                await signal("reboot")
                await until(
                    "rebooted", lambda s: len(dc.emulated[0].boots) > boots and not s["currentStep"], 60
                )
                assert dc.emulated[0].boots[-1].target == "Hdd", "a provisioned host reboots into its disk"

                await signal("delete")
                result = await asyncio.wait_for(
                    client.get_workflow_handle(wid, result_type=HostStatus).result(), 180
                )
                assert result.deleted and result.provisioning.state.value == "deleting"
