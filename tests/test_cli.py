"""The README's commands, run as a user runs them: `metalflow ...` and the plain `temporal` CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client

from metalflow.contracts import HostWorkflowInput
from metalflow.devenv.datacenter import Datacenter
from metalflow.devenv.temporal import temporal_cli
from metalflow.settings import Settings
from worker.control import build_worker


async def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = await asyncio.to_thread(subprocess.run, list(argv), capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def metalflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "metalflow", *args]


async def test_metalflow_cli_and_temporal_cli_drive_hosts(
    client: Client, settings: Settings, tmp_path: Path, ns: str
) -> None:
    address = settings.temporal_address
    tctl = [temporal_cli(), "workflow"]
    async with Datacenter(settings, hosts=2, prefix="cli", namespace=ns) as dc:
        hostfile = tmp_path / "hosts.yaml"
        docs = dc.manifests()
        hostfile.write_text(yaml.safe_dump_all([docs[0], docs[1]]))  # the Secret and cli-0
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                # 1) the plain temporal CLI starts cli-1 with the documented line
                inp = HostWorkflowInput(ref=dc.host(1).ref, spec=dc.host(1).spec)
                (tmp_path / "host.json").write_text(inp.model_dump_json(by_alias=True))
                await run(
                    *tctl,
                    "start",
                    "--address",
                    address,
                    "--task-queue",
                    settings.task_queue,
                    "--type",
                    "HostWorkflow",
                    "--workflow-id",
                    f"host/{ns}/cli-1",
                    "--input-file",
                    str(tmp_path / "host.json"),
                )
                # 2) metalflow provision --wait drives cli-0 to provisioned and exits 0
                done = await run(
                    *metalflow(
                        "provision",
                        str(hostfile),
                        "--wait",
                        "--timeout",
                        "240",
                        "--secrets-dir",
                        str(tmp_path / "secrets"),
                    )
                )
                assert f"started host/{ns}/cli-0" in done.stdout and "provisioned" in done.stdout

                hosts = json.loads(
                    (await run(*metalflow("hosts", "-o", "json", "-q", f'HostNamespace="{ns}"'))).stdout
                )
                assert {h["name"] for h in hosts} == {"cli-0", "cli-1"}
                status = json.loads((await run(*metalflow("status", "cli-0", "-n", ns, "-o", "json"))).stdout)
                assert status["provisioning"]["state"] == "provisioned" and status["poweredOn"] is True
                assert dc.password not in json.dumps(status)

                async def query(wid: str) -> dict[str, Any]:
                    out = await run(
                        *tctl,
                        "query",
                        "--address",
                        address,
                        "--workflow-id",
                        wid,
                        "--type",
                        "status",
                        "--output",
                        "json",
                    )
                    return json.loads(out.stdout)["queryResult"][0]

                deadline = asyncio.get_running_loop().time() + 240
                while (await query(f"host/{ns}/cli-1"))["provisioning"]["state"] != "provisioned":
                    assert asyncio.get_running_loop().time() < deadline, "cli-1 not provisioned"
                    await asyncio.sleep(0.5)

                listed = await run(
                    *tctl,
                    "list",
                    "--address",
                    address,
                    "--output",
                    "json",
                    "--query",
                    f'WorkflowType="HostWorkflow" AND HostState="provisioned" AND HostNamespace="{ns}"',
                )
                assert {w["execution"]["workflowId"] for w in json.loads(listed.stdout)} == {
                    f"host/{ns}/cli-0",
                    f"host/{ns}/cli-1",
                }

                # operator actions with the temporal CLI
                async def signal(name: str) -> None:
                    await run(
                        *tctl,
                        "signal",
                        "--address",
                        address,
                        "--workflow-id",
                        f"host/{ns}/cli-1",
                        "--name",
                        name,
                    )

                await signal("pause")
                assert (await query(f"host/{ns}/cli-1"))["paused"] is True
                await signal("resume")
                assert (await query(f"host/{ns}/cli-1"))["paused"] is False
                bad = inp.spec.model_dump(mode="json", by_alias=True) | {"bootMACAddress": None}
                (tmp_path / "bad.json").write_text(json.dumps(bad))
                rejected = await run(
                    *tctl,
                    "update",
                    "execute",
                    "--address",
                    address,
                    "--workflow-id",
                    f"host/{ns}/cli-1",
                    "--name",
                    "update_spec",
                    "--input-file",
                    str(tmp_path / "bad.json"),
                    check=False,
                )
                assert (
                    rejected.returncode != 0
                    and "bootMACAddress is required" in rejected.stderr + rejected.stdout
                )

                # deprovision with the metalflow CLI; the host goes back to available
                await run(*metalflow("deprovision", "cli-0", "-n", ns))
                deadline = asyncio.get_running_loop().time() + 240
                while (await query(f"host/{ns}/cli-0"))["provisioning"]["state"] != "available":
                    assert asyncio.get_running_loop().time() < deadline, "cli-0 not deprovisioned"
                    await asyncio.sleep(0.5)
