"""One Debian image builder: mmdebstrap (Debian's own packages) plus Python wheels, cached.

The deploy ramdisk (testbed/ramdisk.py) is built from it, and an OS image can be: what goes in is
data (`DebianImage`: suite, package list, hooks, wheels), so another image is another value, not
another script. Two cache layers (testbed/cache.py, outside the clone):

- `debian-rootfs/<key>`: mmdebstrap's root, keyed by a hash of suite, variant, packages and
  the hooks' text; minutes to build, rarely changes.
- `<name>/<key>`: that root copied, with the wheels installed under `/opt/<name>` by pip
  (`--target`, no pip inside the image), keyed by the Debian key plus the requirements and the
  local wheels' hashes (the checkout's own wheel changes with every commit; the Debian layer is
  reused).

Each build writes `manifest.json`: Debian package versions (dpkg-query on the root), each wheel's
content digest (sha256 over its members, so a rebuilt wheel of the same source matches), and the
metalflow version. Rebuilding from the same inputs gives the same manifest (the
bytes of the root are not expected to be identical: mmdebstrap stamps times and machine ids).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from testbed.cache import artefact_dir, ensure_artefact

REPO = Path(__file__).resolve().parents[1]
# A fixed time for the checkout's wheel, so the same source gives the same wheel (and hash).
SOURCE_DATE_EPOCH = "1700000000"


class ImageBuildError(RuntimeError):
    """A build step failed; the message names the step and what it printed."""


@dataclass(frozen=True)
class DebianImage:
    """What an image is built from. `hooks` are shell snippets mmdebstrap runs after install
    (`--customize-hook`, `$1` is the root); `requirements` are pip requirement strings installed
    with their dependencies, `local_wheels` wheel files installed without theirs."""

    name: str
    packages: tuple[str, ...]
    suite: str = "bookworm"
    variant: str = "minbase"
    hooks: tuple[str, ...] = ()
    dpkg_excludes: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    local_wheels: tuple[Path, ...] = field(default=())

    def debian_inputs(self) -> dict[str, object]:
        return {
            "suite": self.suite,
            "variant": self.variant,
            "packages": sorted(self.packages),
            "hooks": list(self.hooks),
            "dpkg_excludes": list(self.dpkg_excludes),
        }

    def debian_key(self) -> str:
        return _digest(self.debian_inputs())

    def key(self) -> str:
        return _digest(
            {
                "debian": self.debian_key(),
                "requirements": sorted(self.requirements),
                "local_wheels": sorted(wheel_digest(w) for w in self.local_wheels),
                "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            }
        )


def _digest(inputs: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel_digest(path: Path) -> str:
    """sha256 of a wheel's contents (member names and bytes), not of the zip: a wheel rebuilt from
    the same source has the same digest even where the archive's timestamps differ."""
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            h.update(name.encode() + b"\0" + hashlib.sha256(zf.read(name)).digest())
    return h.hexdigest()


def _run(argv: list[str], what: str, timeout: float = 1800, **kw: object) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-3000:]
        raise ImageBuildError(f"{what} failed ({' '.join(argv[:3])} ...):\n{tail}")
    return str(done.stdout)


def missing_tools() -> list[str]:
    """What this machine lacks to build an image (root, mmdebstrap): empty when it can."""
    missing = [] if os.geteuid() == 0 else ["root (mmdebstrap's root mode, chroot)"]
    missing += [t for t in ("mmdebstrap", "chroot") if not shutil.which(t)]
    return missing


def build_checkout_wheel(out_dir: Path) -> Path:
    """The checkout's own wheel (metalflow), built reproducibly (fixed SOURCE_DATE_EPOCH)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    with tempfile.TemporaryDirectory() as tmp:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "-w",
                tmp,
                str(REPO),
            ],
            "building the checkout's wheel",
            timeout=600,
            env=env,
            cwd=tmp,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        target = out_dir / wheel.name
        shutil.copyfile(wheel, target)
    shutil.rmtree(REPO / "build", ignore_errors=True)
    return target


def debian_rootfs(image: DebianImage) -> Path:
    """The cached mmdebstrap root for IMAGE's Debian inputs (`<dir>/root`, `<dir>/packages.json`)."""

    def build(out: Path) -> None:
        missing = missing_tools()
        if missing:
            raise ImageBuildError("cannot build a Debian image here; missing: " + ", ".join(missing))
        argv = [
            "mmdebstrap",
            "--mode=root",
            f"--variant={image.variant}",
            "--include=" + ",".join(sorted(image.packages)),
            *(f"--dpkgopt=path-exclude={p}" for p in image.dpkg_excludes),
            *(f"--customize-hook={h}" for h in image.hooks),
            image.suite,
            str(out / "root"),
        ]
        started = time.monotonic()
        _run(argv, "mmdebstrap", timeout=1800)
        (out / "packages.json").write_text(
            json.dumps(debian_packages(out / "root"), indent=1, sort_keys=True)
        )
        (out / "build.json").write_text(
            json.dumps({"inputs": image.debian_inputs(), "seconds": round(time.monotonic() - started, 1)})
        )

    return ensure_artefact("debian-rootfs", image.debian_key(), build)


def debian_packages(root: Path) -> dict[str, str]:
    """{package: version} of what dpkg has installed in ROOT."""
    out = _run(
        [
            "dpkg-query",
            f"--admindir={root}/var/lib/dpkg",
            "-W",
            "-f",
            "${Package}\t${Version}\t${db:Status-Abbrev}\n",
        ],
        "dpkg-query",
    )
    rows = (line.split("\t") for line in out.splitlines() if line.strip())
    return {name: version for name, version, status in rows if status.startswith("ii")}


def download_wheels(image: DebianImage, dest: Path) -> list[Path]:
    """The requirements and their dependencies as binary wheels for this Python (the image's,
    bookworm's 3.11), through pip's ordinary index and cache."""
    dest.mkdir(parents=True, exist_ok=True)
    if image.requirements:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--only-binary=:all:",
                "--python-version",
                f"{sys.version_info.major}.{sys.version_info.minor}",
                "--platform",
                "manylinux2014_x86_64",
                "--platform",
                "manylinux_2_28_x86_64",
                "--platform",
                "manylinux_2_17_x86_64",
                "-d",
                str(dest),
                *image.requirements,
            ],
            "pip download",
            timeout=900,
        )
    return sorted(dest.glob("*.whl"))


def _wheel_version(wheels: list[Path], project: str) -> str | None:
    for w in wheels:
        m = re.match(rf"{project}-([^-]+)-", w.name)
        if m:
            return m[1]
    return None


def build_image(image: DebianImage) -> Path:
    """The cached image: `<dir>/root` (Debian + `/opt/<name>` Python packages) and
    `<dir>/manifest.json`."""

    def build(out: Path) -> None:
        started = time.monotonic()
        base = debian_rootfs(image)
        root = out / "root"
        _run(["cp", "-a", str(base / "root"), str(root)], "copying the Debian root")
        wheels = download_wheels(image, out / "wheels") + [Path(w) for w in image.local_wheels]
        if wheels:
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--no-deps",
                    "--no-compile",
                    "--target",
                    str(root / "opt" / image.name),
                    *map(str, wheels),
                ],
                "pip install --target",
                timeout=900,
            )
        manifest = {
            "name": image.name,
            "suite": image.suite,
            "debian_key": image.debian_key(),
            "key": image.key(),
            "debian_packages": json.loads((base / "packages.json").read_text()),
            "wheels": {w.name: wheel_digest(w) for w in sorted(wheels, key=lambda w: w.name)},
            "metalflow_version": _wheel_version(wheels, "metalflow"),
        }
        shutil.rmtree(out / "wheels", ignore_errors=True)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        (out / "build.json").write_text(json.dumps({"seconds": round(time.monotonic() - started, 1)}))

    return ensure_artefact(image.name, image.key(), build)


def cached_image(image: DebianImage) -> Path | None:
    path = artefact_dir(image.name, image.key())
    return path if (path / "manifest.json").exists() else None
