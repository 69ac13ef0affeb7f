"""The layers hold: import-linter's contracts pass on the tree and fail on a planted reverse
import, and the API package imports inside Temporal's workflow sandbox without pass-through."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sandbox_probe import SandboxCallProbe, SandboxImportProbe
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import metalflow.api

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["metalflow", "workflows", "activities", "worker", "k8s_bridge", "testbed"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _tree_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    copy.mkdir()
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    return copy


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}\n")


def test_contracts_hold_on_the_tree(tmp_path: Path) -> None:
    run = _lint_imports(_tree_copy(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("metalflow/api/models.py", "import workflows.host  # noqa", "layers point down only"),
        (
            "metalflow/runtime/settings.py",
            "import metalflow.client.operations  # noqa",
            "layers point down only",
        ),
        ("workflows/register.py", "import activities.bmc  # noqa", "layers point down only"),
        ("metalflow/api/validation.py", "import kubernetes  # noqa", "the API package is pure"),
        ("workflows/clean.py", "import metalflow.runtime.secrets  # noqa", "workflows stay deterministic"),
        ("worker/dnsmasq.py", "import sushy_tools  # noqa", "the product imports no test-bed library"),
    ],
)
def test_a_planted_reverse_import_breaks_a_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    tree = _tree_copy(tmp_path)
    _plant(tree, module, line)
    run = _lint_imports(tree)
    assert run.returncode != 0, run.stdout
    broken = [ln for ln in run.stdout.splitlines() if ln.endswith("BROKEN")]
    assert any(ln.startswith(contract) for ln in broken), run.stdout


def _api_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(metalflow.api.__path__, "metalflow.api."))


@pytest.mark.filterwarnings("ignore:Module .* was imported after initial workflow load")
async def test_api_package_imports_inside_the_workflow_sandbox(client: Client) -> None:
    modules = _api_modules()
    assert "metalflow.api.states" in modules and "metalflow.api.bmc_address" in modules
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    restrictions = SandboxRestrictions.default.with_passthrough_modules(
        "pydantic", "pydantic_core", "annotated_types"
    )
    async with Worker(
        client,
        task_queue=queue,
        workflows=[SandboxImportProbe],
        workflow_runner=SandboxedWorkflowRunner(restrictions=restrictions),
    ):
        outcome = await client.execute_workflow(
            SandboxImportProbe.run,
            [*modules, "impure_at_import"],
            id=f"sandbox-probe-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
    assert {m: outcome[m] for m in modules if outcome[m]} == {}
    # the probe can tell: a module that reads the clock at import is refused by the sandbox
    assert "RestrictedWorkflowAccessError" in outcome["impure_at_import"]


async def test_the_workers_sandbox_still_refuses_non_deterministic_calls(client: Client) -> None:
    """The worker passes every module through (for speed); the sandbox's runtime checks stay."""
    from workflows import sandbox_runner

    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=queue, workflows=[SandboxCallProbe], workflow_runner=sandbox_runner()
    ):
        outcome = await client.execute_workflow(
            SandboxCallProbe.run, id=f"sandbox-calls-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
    assert outcome == dict.fromkeys(outcome, "RestrictedWorkflowAccessError") and len(outcome) == 3


PRODUCT = ["metalflow", "workflows", "activities", "worker", "k8s_bridge"]
MAX_MODULE_LINES = 500


def test_product_modules_stay_small() -> None:
    """Small modules with one job: a module past the limit is a module to split."""
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
    }
    assert sizes, "no product modules found"
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}
