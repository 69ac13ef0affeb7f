"""The build cache (testbed/cache.py): one place per (name, version key), filled atomically."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.cache import artefact_dir, ensure_artefact


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("METALFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_an_artefact_is_built_once_per_version_key(cache: Path) -> None:
    builds: list[Path] = []

    def build(out: Path) -> None:
        builds.append(out)
        (out / "vmlinuz").write_text("kernel")

    first = ensure_artefact("kernel", "6.1.0-1", build)
    assert first == artefact_dir("kernel", "6.1.0-1") == cache / "kernel" / "6.1.0-1"
    assert ensure_artefact("kernel", "6.1.0-1", build) == first and len(builds) == 1
    assert (first / "vmlinuz").read_text() == "kernel"
    ensure_artefact("kernel", "6.1.0-2", build)  # new inputs, new entry
    assert len(builds) == 2 and sorted(p.name for p in (cache / "kernel").iterdir()) == ["6.1.0-1", "6.1.0-2"]


def test_a_failed_build_leaves_nothing_behind(cache: Path) -> None:
    def build(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("download failed")

    with pytest.raises(RuntimeError, match="download failed"):
        ensure_artefact("kernel", "v1", build)
    assert list((cache / "kernel").iterdir()) == []


def test_a_build_that_loses_a_race_keeps_the_winner(cache: Path) -> None:
    def winner(out: Path) -> None:
        (out / "who").write_text("winner")

    def loser(out: Path) -> None:
        ensure_artefact("kernel", "v1", winner)  # another session finishes first
        (out / "who").write_text("loser")

    got = ensure_artefact("kernel", "v1", loser)
    assert (got / "who").read_text() == "winner" and [p.name for p in got.parent.iterdir()] == ["v1"]


@pytest.mark.parametrize("key", ["", "../escape", ".hidden", "a/b"])
def test_keys_stay_inside_the_cache(key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"not a cache path component: {key!r}")):
        artefact_dir("kernel", key)
