"""The Debian image builder (testbed/debian_image.py) from Debian's real packages: two builds from
the same inputs, each into its own cache, give the same manifest (package versions,
wheel hashes, metalflow version); the same inputs again are a cache hit; other inputs, another key.
Needs root, mmdebstrap and the Debian mirror (scripts/e2e-deps.sh installs mmdebstrap)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from testbed.debian_image import build_checkout_wheel, build_image, missing_tools
from testbed.ramdisk import deploy_image

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_same_inputs_give_the_same_manifest_and_a_cache_hit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ramdisk's own image (Debian root + the agent's wheels + this checkout's wheel), built
    cold twice, each into an empty cache (two mmdebstrap runs: minutes). Not against the image in
    the build cache: that one reflects the Debian archive on the day it was built (seen: a
    libpam security update between the cached build and a rebuild), which no input names."""
    missing = missing_tools()
    if missing:
        pytest.skip("cannot build a Debian image here; missing: " + ", ".join(missing))
    manifests, outs = [], []
    for cache in (tmp_path / "cold-cache-1", tmp_path / "cold-cache-2"):
        monkeypatch.setenv("METALFLOW_CACHE", str(cache))
        wheel = build_checkout_wheel(tmp_path / f"wheel-{len(outs)}")  # built anew each time
        image = deploy_image(wheel)
        out = build_image(image)
        outs.append(out)
        manifests.append(json.loads((out / "manifest.json").read_text()))
        root = out / "root"
        assert (root / "opt" / "ramdisk-root" / "metalflow" / "__init__.py").exists()
        assert (root / "usr" / "bin" / "python3").exists() and (root / "usr" / "sbin" / "sgdisk").exists()
        assert not (root / "usr" / "share" / "doc" / "python3").exists()  # the dpkg path excludes
    assert outs[1].is_relative_to(tmp_path)
    first, second = manifests
    assert first == second
    assert first["debian_packages"]["python3-minimal"] and first["debian_packages"]["qemu-utils"]
    assert any(name.startswith("temporalio-") for name in first["wheels"])
    assert (
        first["metalflow_version"]
        and f"metalflow-{first['metalflow_version']}-py3-none-any.whl" in first["wheels"]
    )

    # the same inputs again: the cached image, not a rebuild
    stamp = (outs[1] / "manifest.json").stat().st_mtime_ns
    assert build_image(image) == outs[1] and (outs[1] / "manifest.json").stat().st_mtime_ns == stamp
    # another package list or hook is another Debian root; another requirement, another image
    assert dataclasses.replace(image, packages=("hello", "jq")).debian_key() != image.debian_key()
    assert dataclasses.replace(image, hooks=("true",)).debian_key() != image.debian_key()
    other_reqs = dataclasses.replace(image, requirements=("six", "idna"))
    assert other_reqs.debian_key() == image.debian_key() and other_reqs.key() != image.key()
