"""The Debian kernel the e2e VMs boot (deploy ramdisk and written image), in the build cache.

Extracted from the package linux-image-amd64 depends on, never installed (testbed/cache.py,
keyed by that package's name and version: a kernel update is fetched anew, a fresh clone reuses
what is there). `python -m testbed.kernel` fetches it (scripts/e2e-deps.sh, as root with apt);
the e2e tests only look it up.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from testbed.cache import artefact_dir, ensure_artefact

META_PACKAGE = "linux-image-amd64"


def _apt_cache(*args: str) -> str:
    return subprocess.run(["apt-cache", *args], capture_output=True, text=True, timeout=60).stdout


def _run(argv: list[str], cwd: str | None = None) -> None:
    """Quiet unless it fails (apt-get warns that root downloads unsandboxed)."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def kernel_package() -> tuple[str, str] | None:
    """(package, version) of the kernel META_PACKAGE depends on; None where apt knows none."""
    if not shutil.which("apt-cache"):
        return None
    dep = re.search(r"Depends: (linux-image-\d\S*)", _apt_cache("depends", META_PACKAGE))
    if not dep:
        return None
    version = re.search(r"^Version: (\S+)", _apt_cache("show", "--no-all-versions", dep[1]), re.M)
    return (dep[1], version[1]) if version else None


def _key(package: tuple[str, str]) -> str:
    return "_".join(package)


def cached_kernel() -> Path | None:
    """The extracted kernel's root (boot/vmlinuz-*, lib/modules/) when it is in the cache."""
    package = kernel_package()
    root = artefact_dir("kernel", _key(package)) if package else None
    return root if root and any(root.glob("boot/vmlinuz-*")) else None


def fetch_kernel() -> Path:
    package = kernel_package()
    if package is None:
        raise RuntimeError(f"apt knows no {META_PACKAGE} here")

    def extract(out: Path) -> None:
        with tempfile.TemporaryDirectory() as download:
            pinned = "=".join(package)
            _run(["apt-get", "download", "-qq", pinned], cwd=download)
            (deb,) = Path(download).glob("*.deb")
            _run(["dpkg", "-x", str(deb), str(out)])

    return ensure_artefact("kernel", _key(package), extract)


if __name__ == "__main__":
    print(fetch_kernel())
