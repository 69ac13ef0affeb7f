"""The real OS image (testbed/os_image.py) and the config drive the agent writes, booted for real.

1. The image's layout as an OS and firmware will read it: sfdisk reads its GPT, `blkid -p` at
   each partition's offset finds the ESP's FAT and the root's ext4 (with the UUID GRUB searches
   for), mtools finds GRUB's EFI binary on the ESP, the MBR carries GRUB's boot code; the qcow2
   holds the same bytes; a second call is a cache hit.
2. The image written to a larger disk, the agent's config drive step run on it (the real code:
   activities/agent/configdrive.py, a config-2 partition after the image's), then the disk booted
   by QEMU (SeaBIOS -> GRUB -> Debian's kernel -> systemd -> cloud-init): cloud-init's
   ConfigDrive datasource finds the partition and runs the userData, which prints a per-run
   marker with the hostname and instance id from metaData on the serial console. No network:
   the VM has no NIC. (QEMU started directly: this checks the image and the drive; the metalflow
   e2e in test_vm.py deploys through the product.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from activities.agent import configdrive
from activities.agent.devices import BlockDevice
from activities.configdrive import build_iso, drive_files
from metalflow.api.models import HostRef
from testbed.debian_image import missing_tools, sha256_file
from testbed.os_image import ESP_START, MIB, ROOT_START, OSImage, os_image

# Part of `make e2e`; `make e2e-realos` runs the real OS's tests alone.
pytestmark = [pytest.mark.e2e, pytest.mark.realos, pytest.mark.timeout(2400)]
GIB = 1 << 30


@pytest.fixture(scope="module")
def image() -> OSImage:
    missing = missing_tools() + [
        t for t in ("sfdisk", "mke2fs", "mkfs.fat", "mcopy", "qemu-img") if not shutil.which(t)
    ]
    if missing:
        pytest.skip("cannot build the OS image here; missing: " + ", ".join(missing))
    started = time.monotonic()
    img = os_image()
    m = img.manifest
    print(
        f"\nOS image {img.dir.name}: raw {m['raw']['bytes'] / MIB:.0f} MiB, "  # type: ignore[index]
        f"qcow2 {m['qcow2']['bytes'] / MIB:.0f} MiB, built in {m['seconds']} s "  # type: ignore[index]
        f"(this call {time.monotonic() - started:.1f} s)"
    )
    return img


def blkid(path: Path, offset: int, size: int) -> dict[str, str]:
    out = subprocess.run(
        ["blkid", "-p", "-O", str(offset), "-S", str(size), "-o", "export", str(path)],
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_image_layout_bootloaders_and_formats(image: OSImage) -> None:
    raw = image.raw
    table = json.loads(
        subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True, check=True).stdout
    )
    parts = table["partitiontable"]["partitions"]
    assert table["partitiontable"]["label"] == "gpt"
    assert [p["type"] for p in parts] == [
        "21686148-6449-6E6F-744E-656564454649",  # BIOS boot (GRUB's core.img)
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",  # EFI system partition
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",  # Linux file system
    ]
    assert parts[1]["start"] * 512 == ESP_START * MIB and parts[2]["start"] * 512 == ROOT_START * MIB
    verify = subprocess.run(["sfdisk", "--verify", str(raw)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    esp = blkid(raw, parts[1]["start"] * 512, parts[1]["size"] * 512)
    root = blkid(raw, parts[2]["start"] * 512, parts[2]["size"] * 512)
    assert esp.get("TYPE") == "vfat" and root.get("TYPE") == "ext4"
    assert root.get("UUID") == image.root_uuid
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{raw}@@{parts[1]['start'] * 512}", "::/EFI/BOOT"],
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert "BOOTX64.EFI" in listing.upper()
    with raw.open("rb") as f:
        mbr = f.read(512)
        f.seek(1 * MIB)
        core = f.read(512)
    assert b"GRUB" in mbr and mbr[510:] == b"\x55\xaa"
    assert int.from_bytes(mbr[0x5C:0x64], "little") == 2048  # boot.img points at core.img
    assert int.from_bytes(core[500:508], "little") == 2049  # core.img's blocklist: the rest of it
    assert sha256_file(image.qcow2) == image.qcow2_sha256 and sha256_file(raw) == image.raw_sha256
    same = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(image.qcow2)])
    assert same.returncode == 0
    stamp = (image.dir / "manifest.json").stat().st_mtime_ns
    assert os_image().dir == image.dir and (image.dir / "manifest.json").stat().st_mtime_ns == stamp


def deployed_disk(image: OSImage, path: Path, size: int) -> BlockDevice:
    """The image written to the start of a larger sparse disk, as the agent writes it."""
    subprocess.run(["cp", "--sparse=always", str(image.raw), str(path)], check=True)
    with path.open("r+b") as f:
        f.truncate(size)
    return BlockDevice(name="/dev/vda", path=path, size_bytes=size)


def boot(disk: Path, console: Path, firmware: str = "bios") -> subprocess.Popen[bytes]:
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        "1024",
        "-smp",
        "1",
        "-drive",
        f"file={disk},format=raw,if=virtio",
        "-nic",
        "none",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{console}",
        "-no-reboot",
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_console(console: Path, proc: subprocess.Popen[bytes], text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        seen = console.read_text(errors="replace") if console.exists() else ""
        if text in seen:
            return seen
        if proc.poll() is not None or time.monotonic() > deadline:
            stderr = (
                proc.stderr.read().decode(errors="replace") if proc.poll() is not None and proc.stderr else ""
            )
            raise AssertionError(f"{text!r} not on the console in {timeout:.0f}s ({stderr}):\n{seen[-4000:]}")
        time.sleep(1)


def test_bios_boot_and_cloud_init_reads_the_agents_config_drive(image: OSImage, tmp_path: Path) -> None:
    marker = f"METALFLOW-OS-{uuid.uuid4().hex[:8]}"
    host = HostRef(namespace="e2e", name=f"realos-{uuid.uuid4().hex[:6]}")
    user_data = (
        "#cloud-config\n"
        "runcmd:\n"
        '  - echo "'
        + marker
        + ' hostname=$(hostname) instance=$(cat /var/lib/cloud/data/instance-id)" > /dev/ttyS0\n'
    )
    # metaData as metal3 passes it: OpenStack meta_data.json, whose "uuid" is the instance id
    iso = build_iso(drive_files(host, user_data, None, {"uuid": f"iid-{marker}"}))
    dev = deployed_disk(image, tmp_path / "disk.raw", 4 * GIB)
    offset = configdrive.write(dev, iso)
    assert offset == 4 * GIB - 64 * MIB
    console = tmp_path / "console.log"
    started = time.monotonic()
    proc = boot(dev.path, console)
    try:
        seen = wait_console(console, proc, f"{marker} hostname=", 1500)
    finally:
        proc.kill()
        proc.wait()
    print(f"\nBIOS boot to the userData's marker: {time.monotonic() - started:.0f} s")
    line = next(ln for ln in seen.splitlines() if ln.startswith(marker))
    assert f"hostname={host.name}" in line and f"instance=iid-{marker}" in line, line
    assert "GRUB" in seen or "Booting" in seen
