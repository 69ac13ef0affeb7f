"""Test-bed build artefacts that outlive a clone: `${METALFLOW_CACHE:-~/.cache/metalflow}/<name>/<key>`.

Kernels, images and binaries take minutes to fetch or build; keyed by what they are built from
(a package version, a source hash), one built by an earlier session or clone on this machine is
reused by a fresh clone (CI) and never goes stale: new inputs, new key. An entry appears whole or
not at all: it is built in a temporary directory beside its place and renamed there, so a build
that crashes or races another never leaves half an artefact behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("METALFLOW_CACHE") or Path.home() / ".cache" / "metalflow")


def artefact_dir(name: str, version_key: str) -> Path:
    """Where artefact NAME built from VERSION_KEY lives (whether or not it is built yet)."""
    for part in (name, version_key):
        if not part or "/" in part or part.startswith("."):
            raise ValueError(f"not a cache path component: {part!r}")
    return cache_root() / name / version_key


def ensure_artefact(name: str, version_key: str, build: Callable[[Path], None]) -> Path:
    """The artefact's directory; on first use BUILD fills an empty temporary directory, which then
    takes the artefact's place. If another build got there first, its result is kept."""
    final = artefact_dir(name, version_key)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{version_key}.", dir=final.parent))
    try:
        build(work)
        try:
            work.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
