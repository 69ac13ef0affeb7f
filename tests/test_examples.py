"""The README's two script examples (examples/) provision emulated hosts against the dev server:
one with metalflow's client API, one with the plain Temporal SDK and metalflow's payload models
only. Each runs as its own process, as a script author runs it; the worker runs here."""

from __future__ import annotations

import ast
import asyncio
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from temporalio.client import Client

from metalflow.api.host import HostWorkflowInput
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import build_worker

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def run(*argv: str, timeout: float = 300) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode()


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }


async def test_both_script_examples_provision_a_host(
    client: Client, settings: Settings, tmp_path: Path, ns: str
) -> None:
    async with Datacenter(settings, hosts=2, prefix="script", namespace=ns) as dc:
        docs = dc.manifests()
        hostfile = tmp_path / "hosts.yaml"
        hostfile.write_text(yaml.safe_dump_all([docs[0], docs[1]]))  # the BMC Secret and the first host
        second = dc.host(1)
        host_json = tmp_path / "host.json"
        host_json.write_text(
            HostWorkflowInput(ref=second.ref, spec=second.spec).model_dump_json(by_alias=True)
        )
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                (code1, out1), (code2, out2) = await asyncio.gather(
                    run(str(EXAMPLES / "provision_with_metalflow.py"), str(hostfile)),
                    run(
                        str(EXAMPLES / "provision_with_temporal.py"),
                        str(host_json),
                        "--address",
                        settings.temporal_address,
                        "--task-queue",
                        settings.task_queue,
                    ),
                )
                statuses = [await operations.status(client, h.ref) for h in (dc.host(0), dc.host(1))]
        first = dc.host(0)
        assert code1 == 0, out1
        assert f"{ns}/{first.ref.name}: started" in out1 and f"{ns}/{first.ref.name}: provisioned" in out1, (
            out1
        )
        assert code2 == 0, out2
        assert f"host/{ns}/{second.ref.name}: started" in out2, out2
        assert f"host/{ns}/{second.ref.name}: provisioned" in out2, out2
        for st in statuses:
            assert st.provisioning.state == S.PROVISIONED and st.error_type is None, st
    # the plain-SDK example takes metalflow's payload models and nothing else of it
    plain = {m for m in imports(EXAMPLES / "provision_with_temporal.py") if m.split(".")[0] == "metalflow"}
    assert plain == {"metalflow.api.host", "metalflow.api.models"}, plain
    assert json.loads(host_json.read_text())["ref"]["name"] == second.ref.name
