"""metal3's image formats vdi and vmdk (issue 16): written through qemu-img like qcow2.

Real files and loopback HTTP: a raw image built here is converted with qemu-img into each
format, served, written by the agent onto a sparse-file disk and read back byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.agent import AgentActivities
from activities.agent.config import AgentConfig, FileDisk
from activities.agent.image import detect_format
from metalflow.api.agent import WriteImageRequest
from metalflow.api.models import ChecksumType, ImageFormat, ImageSpec
from testbed.images import BuiltImage, build_raw_image, sha256_of

GIB = 1 << 30
pytestmark = pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img (qemu-utils) missing")


@pytest.fixture(scope="module")
def raw(www: tuple[Path, str]) -> BuiltImage:
    return build_raw_image(www[0] / "fmt.img", size_mib=8, label="formats")


def convert(raw: BuiltImage, fmt: str, path: Path) -> BuiltImage:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw.path), str(path)], check=True)
    return BuiltImage(path, sha256_of(path), os.path.getsize(path))


def untouched(disk: Path) -> bool:
    """Nothing written where a partition table or file system would start (sparse file: cheap)."""
    if not disk.exists():
        return True
    with disk.open("rb") as f:
        return not f.read(4 << 20).strip(b"\0")


def write(tmp_path: Path, url: str, digest: str, fmt: ImageFormat | None, size: int = 8 * GIB) -> object:
    disk = FileDisk(name="/dev/sda", path=tmp_path / "disk.img", size_bytes=size, serial="S0", model="M0")
    agent = AgentActivities(AgentConfig(host_id="default.h0", disks=[disk]))
    spec = ImageSpec(url=url, checksum=digest, checksum_type=ChecksumType.SHA256, format=fmt)
    return ActivityEnvironment().run(agent.write_image, WriteImageRequest(image=spec))


@pytest.mark.parametrize("fmt", [ImageFormat.VDI, ImageFormat.VMDK])
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "detected"])
def test_vdi_and_vmdk_are_converted_onto_the_disk(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage, fmt: ImageFormat, declared: bool
) -> None:
    img = convert(raw, fmt.value, www[0] / f"os.{fmt.value}")
    assert detect_format(img.path.read_bytes()[:4096]) == fmt
    got = write(tmp_path, f"{www[1]}/os.{fmt.value}", img.sha256, fmt if declared else None)
    assert got.checksum == img.sha256  # type: ignore[attr-defined]
    with (tmp_path / "disk.img").open("rb") as f:
        assert f.read(raw.size) == raw.path.read_bytes(), f"{fmt.value} was not converted to raw"
    assert (tmp_path / "disk.img").stat().st_size == 8 * GIB


def test_declared_format_the_bytes_contradict_is_refused(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage
) -> None:
    img = convert(raw, "vdi", www[0] / "really.vdi")
    with pytest.raises(ApplicationError) as err:
        write(tmp_path, f"{www[1]}/really.vdi", img.sha256, ImageFormat.VMDK)
    assert err.value.type == "ImageFormatError" and "declared vmdk but is vdi" in err.value.message
    assert untouched(tmp_path / "disk.img")


def test_vmdk_larger_than_the_disk_is_refused_before_the_disk_is_touched(
    tmp_path: Path, www: tuple[Path, str]
) -> None:
    big = www[0] / "big.vmdk"
    subprocess.run(["qemu-img", "create", "-f", "vmdk", str(big), "5G"], check=True, capture_output=True)
    with pytest.raises(ApplicationError) as err:
        write(tmp_path, f"{www[1]}/big.vmdk", sha256_of(big), ImageFormat.VMDK, size=4 * GIB)
    assert err.value.type == "ImageTooLarge" and "vmdk virtual size" in err.value.message
    assert untouched(tmp_path / "disk.img")
