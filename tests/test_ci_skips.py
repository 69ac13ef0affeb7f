"""CI cannot be green while the VM end to end skipped: with `CI=true` a missing e2e prerequisite
(here: no Debian kernel in the build cache) fails the run and names what was missing; locally
the same run skips and says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testbed.cache import cache_root

ROOT = Path(__file__).resolve().parents[1]
MISSING = "a Debian kernel in the build cache"


def _cache_without_kernel(tmp_path: Path) -> Path:
    """The build cache with only the kernel missing: the Go binaries and images the e2e's other
    fixtures need stay reachable (links), so what is missing is exactly the kernel."""
    cache = tmp_path / "cache-without-kernel"
    cache.mkdir()
    real = cache_root()
    if real.is_dir():
        for entry in real.iterdir():
            if entry.name != "kernel":
                (cache / entry.name).symlink_to(entry)
    return cache


def _e2e_run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["METALFLOW_CACHE"] = str(_cache_without_kernel(tmp_path))
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "e2e", "tests/e2e/test_vm.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_a_missing_e2e_prerequisite_skips_locally(tmp_path: Path) -> None:
    run = _e2e_run(tmp_path, ci=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "skipped" in run.stdout and MISSING in run.stdout


def test_a_missing_e2e_prerequisite_fails_under_ci(tmp_path: Path) -> None:
    run = _e2e_run(tmp_path, ci=True)
    assert run.returncode != 0, run.stdout
    assert "CI=true and this test could not run" in run.stdout and MISSING in run.stdout
