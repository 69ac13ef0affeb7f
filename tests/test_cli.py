"""The README's commands, run as a user runs them: `metalflow ...` and the plain `temporal` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client
from tests_support import backing_off

from metalflow.api.host import HostWorkflowInput
from metalflow.api.models import HostStatus, ImageSpec
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.images import build_raw_image
from testbed.temporal import temporal_cli
from worker.control import build_worker


async def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = await asyncio.to_thread(
        subprocess.run,
        list(argv),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},  # no wrapped table rows
    )
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
                # `metalflow watch` follows cli-1 through its lifecycle until it settles
                watched = asyncio.create_task(
                    run(*metalflow("watch", "cli-1", "-n", ns, "--interval", "0.2", "--timeout", "240"))
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
                cli0 = next(h for h in hosts if h["name"] == "cli-0")
                assert cli0["state"] == "provisioned" and cli0["online"] is True
                assert cli0["poweredOn"] is True and cli0["ageSeconds"] >= 0
                table = (
                    await run(*metalflow("hosts", "--no-namespace", "-q", f'HostNamespace="{ns}"'))
                ).stdout
                assert table.split()[:8] == [
                    "NAME",
                    "STATE",
                    "CONSUMER",
                    "ONLINE",
                    "POWER",
                    "ERROR",
                    "AGE",
                    "STEP",
                ]
                assert re.search(r"^\s*cli-0\s+provisioned\s+true\s+on\s+\d+[smhd]\s*$", table, re.M), table
                status = json.loads((await run(*metalflow("status", "cli-0", "-n", ns, "-o", "json"))).stdout)
                missing = await run(*metalflow("watch", "cli-9", "-n", ns), check=False)
                assert (
                    missing.returncode == 1
                    and f"workflow not found for ID: host/{ns}/cli-9" in missing.stderr
                )
                assert status["provisioning"]["state"] == "provisioned" and status["poweredOn"] is True
                assert status["bmcDriver"] == "redfish", "registration records the driver in status"
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

                async def until(wid: str, what: str, check: Any, timeout: float = 240) -> dict[str, Any]:
                    deadline = asyncio.get_running_loop().time() + timeout
                    while not check(st := await query(wid)):
                        assert asyncio.get_running_loop().time() < deadline, f"{wid}: {what}; last {st}"
                        await asyncio.sleep(0.3)
                    return st

                def in_state(state: str) -> Any:
                    return lambda st: st["provisioning"]["state"] == state and not st["currentStep"]

                await until(f"host/{ns}/cli-1", "provisioned", in_state("provisioned"))
                out = (await watched).stdout
                # the watch starts (a Python process) while cli-1 already runs: with the test bed's
                # BMCs answering in 1-2 s, inspection and cleaning may be over before its first
                # poll; DeployHost (an image write) always outlasts that, and so do the states
                assert "step DeployHost" in out, out
                seen = [
                    line.split(" | ")[1] for line in out.splitlines() if line.startswith(f"{ns}/cli-1 | ")
                ]
                assert seen[-1] == "provisioned" and "provisioning" in seen, out
                # the running step's activities, read from Temporal (describe of the child)
                assert re.search(r"DeployHost > \S+ \(attempt \d+\)", out), out
                written = re.search(r"last image write: .* \((\d+) bytes\)", out)
                assert written and int(written.group(1)) == dc.image.size, out
                assert f"settled: {ns}/cli-1 | provisioned | power on" in out

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
                async def signal_host(name: str, signal: str) -> None:
                    wid = f"host/{ns}/{name}"
                    await run(*tctl, "signal", "--address", address, "--workflow-id", wid, "--name", signal)

                await signal_host("cli-1", "pause")
                assert (await query(f"host/{ns}/cli-1"))["paused"] is True
                await signal_host("cli-1", "resume")
                assert (await query(f"host/{ns}/cli-1"))["paused"] is False
                # metal3 needs a MAC once inspection is disabled (tests/test_metal3_admission.py)
                bad = inp.spec.model_dump(mode="json", by_alias=True) | {
                    "bootMACAddress": None,
                    "inspectionMode": "disabled",
                }
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
                    and "requires a BootMACAddress value" in rejected.stderr + rejected.stdout
                )

                async def update_spec(wid: str, spec: dict[str, Any], check: bool = True) -> Any:
                    path = tmp_path / f"spec-{abs(hash(json.dumps(spec, sort_keys=True)))}.json"
                    path.write_text(json.dumps(spec))
                    cmd = ["update", "execute", "--address", address, "--workflow-id", wid]
                    return await run(
                        *tctl, *cmd, "--name", "update_spec", "--input-file", str(path), check=check
                    )

                async def current_spec(wid: str) -> dict[str, Any]:
                    cmd = ["query", "--address", address, "--workflow-id", wid, "--type", "spec"]
                    out = await run(*tctl, *cmd, "--output", "json")
                    spec: dict[str, Any] = json.loads(out.stdout)["queryResult"][0]
                    return spec

                # reprovision cli-1 with a new image (temporal CLI) while the metalflow CLI
                # deprovisions cli-0
                v2 = await asyncio.to_thread(
                    build_raw_image, settings.boot_dir / "images" / "v2.img", 8, "v2"
                )
                image_v2 = ImageSpec(url=dc.image_spec().url.replace("os.img", "v2.img"), checksum=v2.sha256)
                spec1 = await current_spec(f"host/{ns}/cli-1")
                await update_spec(f"host/{ns}/cli-1", spec1 | {"image": image_v2.model_dump(mode="json")})
                await run(*metalflow("deprovision", "cli-0", "-n", ns))
                st1 = await until(
                    f"host/{ns}/cli-1",
                    "reprovisioned with v2",
                    lambda st: (
                        in_state("provisioned")(st) and st["provisioning"]["image"]["url"] == image_v2.url
                    ),
                )
                assert st1["operationHistory"]["deprovision"]["end"] is not None
                bmc = inp.spec.bmc.address
                by_image = await run(
                    *tctl,
                    "list",
                    "--address",
                    address,
                    "--output",
                    "json",
                    "--query",
                    f'ImageURL="{image_v2.url}" AND BMCAddress="{bmc}" AND HostNamespace="{ns}"',
                )
                assert [w["execution"]["workflowId"] for w in json.loads(by_image.stdout)] == [
                    f"host/{ns}/cli-1"
                ]
                before = (await until(f"host/{ns}/cli-0", "deprovisioned", in_state("available")))[
                    "operationHistory"
                ]["inspect"]["start"]

                # inspect cli-0 again (signal) while cli-1 is deprovisioned (update: image null)
                await signal_host("cli-0", "inspect")
                await update_spec(f"host/{ns}/cli-1", spec1 | {"image": None})
                await until(
                    f"host/{ns}/cli-0",
                    "inspected again",
                    lambda st: (
                        in_state("available")(st) and st["operationHistory"]["inspect"]["start"] != before
                    ),
                )
                await until(f"host/{ns}/cli-1", "deprovisioned", in_state("available"))

                # a bad image checksum fails provisioning; the operator finds the host by
                # errorType and resets the error with the retry signal (no 30 s back-off wait)
                bad_image = image_v2.model_dump(mode="json") | {"checksum": "0" * 64}
                await update_spec(f"host/{ns}/cli-1", spec1 | {"image": bad_image})
                failed = await until(
                    f"host/{ns}/cli-1", "provisioning error", lambda st: st["errorCount"] == 1
                )
                assert (
                    failed["errorType"] == "provisioning error"
                    and "ImageChecksumMismatch" in failed["errorMessage"]
                )
                listed = await run(
                    *tctl,
                    "list",
                    "--address",
                    address,
                    "--output",
                    "json",
                    "--query",
                    f'ErrorType="provisioning error" AND HostNamespace="{ns}"',
                )
                assert [w["execution"]["workflowId"] for w in json.loads(listed.stdout)] == [
                    f"host/{ns}/cli-1"
                ]
                await backing_off(client, f"host/{ns}/cli-1")  # a retry sent before would be dropped
                await signal_host("cli-1", "retry")
                await until(
                    f"host/{ns}/cli-1", "retried at once", lambda st: st["errorCount"] == 2, timeout=25
                )

                # detach / attach, reboot and delete on cli-0 (available)
                await signal_host("cli-0", "detach")
                await until(f"host/{ns}/cli-0", "detached", lambda st: st["operationalStatus"] == "detached")
                await signal_host("cli-0", "attach")
                await until(
                    f"host/{ns}/cli-0",
                    "attached",
                    lambda st: st["operationalStatus"] == "OK" and not st["detached"],
                )
                reboots = await power_reboots(client, f"host/{ns}/cli-0")
                await signal_host("cli-0", "reboot")
                deadline = asyncio.get_running_loop().time() + 60
                while await power_reboots(client, f"host/{ns}/cli-0") == reboots:
                    assert asyncio.get_running_loop().time() < deadline, "no power reboot after the signal"
                    await asyncio.sleep(0.3)
                await signal_host("cli-0", "delete")
                final = await client.get_workflow_handle(f"host/{ns}/cli-0", result_type=HostStatus).result()
                assert final.deleted is True


async def power_reboots(client: Client, workflow_id: str) -> int:
    """Completed `power reboot` activities in the host's current run."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = {}
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            [summary] = await client.data_converter.decode([event.user_metadata.summary])
            scheduled[event.event_id] = summary
    return sum(
        1
        for event in history.events
        if event.HasField("activity_task_completed_event_attributes")
        and scheduled.get(event.activity_task_completed_event_attributes.scheduled_event_id) == "power reboot"
    )
