"""The in-band agent on real files: sparse-file disks, raw and qcow2 images over loopback HTTP."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fixtures.www import BROKEN
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.agent import AgentActivities
from activities.agent.config import AgentConfig, FileDisk
from activities.configdrive import stage_configdrive
from metalflow.api.agent import CleanRequest, WriteConfigDriveRequest, WriteImageRequest
from metalflow.api.configdrive import ConfigDriveRequest
from metalflow.api.models import ChecksumType, HostRef, ImageFormat, ImageSpec, RootDeviceHints, SecretRef
from testbed.datacenter import write_secret
from testbed.images import MARKER, BuiltImage, build_raw_image, convert_to_qcow2

MIB = 1 << 20
GIB = 1 << 30
needs_qemu_img = pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img (qemu-utils) missing")
needs_sgdisk = pytest.mark.skipif(not shutil.which("sgdisk"), reason="sgdisk (gdisk) missing")


@pytest.fixture(scope="module")
def raw(www: tuple[Path, str]) -> BuiltImage:
    return build_raw_image(www[0] / "os.img", size_mib=8, label="agent-test")


def agent(tmp_path: Path, *sizes: int) -> AgentActivities:
    disks = [
        FileDisk(
            name=f"/dev/sd{chr(97 + i)}",
            path=tmp_path / f"disk{i}.img",
            size_bytes=size,
            serial=f"SER{i}",
            model=f"MODEL{i}",
            hctl=f"0:0:{i}:0",
            rotational=i % 2 == 1,
        )
        for i, size in enumerate(sizes or (8 * GIB,))
    ]
    return AgentActivities(AgentConfig(host_id="default.h0", disks=disks))


def run(fn: Any, *args: Any) -> tuple[Any, list[Any]]:
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *d: beats.extend(d)
    return env.run(fn, *args), beats


def image(
    url: str, digest: str, fmt: ImageFormat | None = ImageFormat.RAW, kind: str = "sha256"
) -> ImageSpec:
    return ImageSpec(url=url, checksum=digest, checksum_type=ChecksumType(kind), format=fmt)


def test_raw_image_streams_onto_the_disk_with_progress(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage
) -> None:
    a = agent(tmp_path)
    got, beats = run(a.write_image, WriteImageRequest(image=image(f"{www[1]}/os.img", raw.sha256)))
    assert got.device == "/dev/sda" and got.bytes_written == raw.size and got.checksum == raw.sha256
    disk = tmp_path / "disk0.img"
    assert disk.stat().st_size == 8 * GIB, "the disk file must keep its size"
    with disk.open("rb") as f:
        assert f.read(raw.size) == raw.path.read_bytes()
    assert beats and beats[-1]["bytes_written"] == raw.size and beats[-1]["total"] == raw.size


def test_md5_and_sha512_and_auto_detection(tmp_path: Path, www: tuple[Path, str], raw: BuiltImage) -> None:
    data = raw.path.read_bytes()
    for kind in ("md5", "sha512"):
        digest = hashlib.new(kind, data).hexdigest()
        got, _ = run(
            agent(tmp_path).write_image, WriteImageRequest(image=image(f"{www[1]}/os.img", digest, kind=kind))
        )
        assert got.checksum_type == kind
        got, _ = run(
            agent(tmp_path).write_image,
            WriteImageRequest(image=image(f"{www[1]}/os.img", digest, kind="auto")),
        )
        assert got.checksum_type == kind


@needs_qemu_img
def test_qcow2_is_converted_onto_the_disk(tmp_path: Path, www: tuple[Path, str], raw: BuiltImage) -> None:
    q = convert_to_qcow2(raw, www[0] / "os.qcow2")
    got, _ = run(
        agent(tmp_path).write_image, WriteImageRequest(image=image(f"{www[1]}/os.qcow2", q.sha256, fmt=None))
    )
    assert got.checksum == q.sha256
    with (tmp_path / "disk0.img").open("rb") as f:
        assert f.read(raw.size) == raw.path.read_bytes()
    assert (tmp_path / "disk0.img").stat().st_size == 8 * GIB


def test_corrupted_image_is_rejected_and_the_disk_left_wiped(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage
) -> None:
    bad = bytearray(raw.path.read_bytes())
    bad[4 << 20] ^= 0xFF  # one flipped bit in the middle
    (www[0] / "corrupt.img").write_bytes(bad)
    disk = tmp_path / "disk0.img"
    a = agent(tmp_path)
    run(a.inventory)  # the agent creates the sparse disk
    with disk.open("r+b") as f:  # an old OS on the disk
        f.write(b"OLD-PARTITION-TABLE")
    with pytest.raises(ApplicationError) as err:
        run(a.write_image, WriteImageRequest(image=image(f"{www[1]}/corrupt.img", raw.sha256)))
    assert err.value.type == "ImageChecksumMismatch" and err.value.non_retryable
    assert raw.sha256 in err.value.message and hashlib.sha256(bad).hexdigest() in err.value.message
    with disk.open("rb") as f:
        head = f.read(1 << 20)
        f.seek(8 * GIB - (1 << 20))
        tail = f.read(1 << 20)
    assert head == bytes(1 << 20) and tail == bytes(1 << 20), "a rejected image must not stay bootable"
    assert MARKER not in head


def test_checksum_from_a_checksum_file(tmp_path: Path, www: tuple[Path, str], raw: BuiltImage) -> None:
    (www[0] / "SHA256SUMS").write_text(f"{'0' * 64}  other.img\n{raw.sha256}  os.img\n")
    spec = ImageSpec(
        url=f"{www[1]}/os.img", checksum=f"{www[1]}/SHA256SUMS", checksum_type=ChecksumType.SHA256
    )
    got, _ = run(agent(tmp_path).write_image, WriteImageRequest(image=spec))
    assert got.checksum == raw.sha256
    (www[0] / "NOLINE").write_text(f"{raw.sha256}  a.img\n{raw.sha256}  b.img\n")
    with pytest.raises(ApplicationError, match=r"no line for 'os\.img'"):
        run(
            agent(tmp_path).write_image,
            WriteImageRequest(image=spec.model_copy(update={"checksum": f"{www[1]}/NOLINE"})),
        )


def test_missing_image_is_permanent(tmp_path: Path, www: tuple[Path, str], raw: BuiltImage) -> None:
    with pytest.raises(ApplicationError) as err:
        run(agent(tmp_path).write_image, WriteImageRequest(image=image(f"{www[1]}/nope.img", raw.sha256)))
    assert err.value.type == "ImageUnavailable" and err.value.non_retryable and "404" in err.value.message


def test_a_download_that_breaks_off_is_retried_not_a_checksum_error(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage
) -> None:
    """The stream's own errors (urllib3's, not requests') are a transient ImageFetchError."""
    with pytest.raises(ApplicationError, match="the image download broke off") as err:
        run(
            agent(tmp_path).write_image, WriteImageRequest(image=image(f"{www[1]}{BROKEN}os.img", raw.sha256))
        )
    assert err.value.type == "ImageFetchError" and not err.value.non_retryable


def test_root_device_hints_choose_and_explain(tmp_path: Path, www: tuple[Path, str], raw: BuiltImage) -> None:
    a = agent(tmp_path, 8 * GIB, 20 * GIB, 2 * GIB)
    spec = image(f"{www[1]}/os.img", raw.sha256)
    got, _ = run(a.write_image, WriteImageRequest(image=spec))
    assert got.device == "/dev/sda", "without hints: the smallest disk of at least 4 GiB"
    hints = RootDeviceHints(serial_number="ser1", min_size_gigabytes=10, rotational=True)
    got, _ = run(a.write_image, WriteImageRequest(image=spec, root_device_hints=hints))
    assert got.device == "/dev/sdb"
    with pytest.raises(ApplicationError) as err:
        run(a.write_image, WriteImageRequest(image=spec, root_device_hints=RootDeviceHints(hctl="9:9:9:9")))
    assert err.value.type == "NoRootDeviceMatch"
    for name in ("/dev/sda", "/dev/sdb", "/dev/sdc"):
        assert name in err.value.message


@needs_sgdisk
def test_metadata_cleaning_removes_gpt_at_both_ends(tmp_path: Path) -> None:
    a = agent(tmp_path, 8 * GIB)
    disk = tmp_path / "disk0.img"
    run(a.inventory)  # creates the sparse disk
    subprocess.run(["sgdisk", "-n", "1:0:+100M", "-t", "1:8300", str(disk)], check=True, capture_output=True)
    with disk.open("rb") as f:
        f.seek(512)
        assert f.read(8) == b"EFI PART"
        f.seek(8 * GIB - 512)
        assert f.read(8) == b"EFI PART"  # the backup header
    got, _ = run(a.clean, CleanRequest(mode="metadata"))
    assert got.devices == ["/dev/sda"]
    printed = subprocess.run(["sgdisk", "-p", str(disk)], capture_output=True, text=True)
    assert "EFI PART" not in disk.open("rb").read(4096).decode("latin1")
    assert "Creating new GPT entries" in printed.stdout or printed.returncode != 0
    assert run(a.clean, CleanRequest(mode="disabled"))[0].devices == []


def test_erase_cleaning_zeroes_every_byte_and_reports_progress(tmp_path: Path) -> None:
    """The agent's full erase (Ironic's erase_devices, one pass); no metal3 spec selects it yet."""
    size = 70 * MIB
    a = agent(tmp_path, size, size)
    run(a.inventory)  # creates the sparse disks
    for disk in (tmp_path / "disk0.img", tmp_path / "disk1.img"):
        with disk.open("r+b") as f:
            for offset in (0, 33 * MIB + 7, size - 4096):
                f.seek(offset)
                f.write(b"customer data " * 64)
    got, beats = run(a.clean, CleanRequest(mode="erase"))
    assert got.devices == ["/dev/sda", "/dev/sdb"] and got.bytes_erased == 2 * size
    for disk in (tmp_path / "disk0.img", tmp_path / "disk1.img"):
        data = disk.read_bytes()
        assert len(data) == size and data.count(0) == size, f"{disk.name} still holds data"
    assert {"cleaned": "/dev/sdb"} in beats


def test_inventory_reads_the_running_system(tmp_path: Path) -> None:
    hw, _ = run(agent(tmp_path, 8 * GIB, 2 * GIB).inventory)
    assert hw.cpu.count == os.cpu_count() and hw.cpu.arch
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    assert hw.ram_mebibytes == int(meminfo) // 1024
    assert [(s.name, s.size_bytes, s.serial_number, s.rotational, s.type) for s in hw.storage] == [
        ("/dev/sda", 8 * GIB, "SER0", False, "SSD"),
        ("/dev/sdb", 2 * GIB, "SER1", True, "HDD"),
    ]
    real = AgentActivities(AgentConfig(host_id="default.h0"))  # the real /sys/class/net
    macs = {n.mac for n in run(real.inventory)[0].nics}
    for iface in Path("/sys/class/net").iterdir():
        mac = (iface / "address").read_text().strip()
        if iface.name != "lo" and mac != "00:00:00:00:00:00":
            assert mac in macs


@needs_sgdisk
def test_config_drive_is_staged_by_reference_and_written_to_its_own_partition(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(www[0]))
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_URL", www[1])
    secret = tmp_path / "ud.yaml"
    write_secret(secret, {"userData": "#cloud-config\npassword: hunter2-topsecret\n"})
    staged, _ = run(
        stage_configdrive,
        ConfigDriveRequest(host=HostRef(name="h0"), user_data=SecretRef(name="ud", path=str(secret))),
    )
    assert "hunter2" not in staged.model_dump_json(), "user-data must not come back to the workflow"
    a = agent(tmp_path)
    disk = tmp_path / "disk0.img"
    run(a.inventory)
    subprocess.run(["sgdisk", "-o", str(disk)], check=True, capture_output=True)  # a GPT image was written
    run(a.write_configdrive, WriteConfigDriveRequest(device="/dev/sda", config_drive=staged))
    table = subprocess.run(["sgdisk", "-p", str(disk)], capture_output=True, text=True, check=True).stdout
    assert "config-2" in table
    start = 8 * GIB - (64 << 20)
    with disk.open("rb") as f:
        f.seek(start + 0x8000)
        pvd = f.read(80)
        f.seek(start)
        iso = f.read(staged.size_bytes)
    assert pvd[1:6] == b"CD001" and pvd[40:48] == b"config-2"
    assert hashlib.sha256(iso).hexdigest() == staged.sha256
    assert b"hunter2-topsecret" in iso
