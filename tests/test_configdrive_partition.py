"""The agent puts the config drive in a partition of its own (as Ironic does), on image files.

cloud-init's ConfigDrive datasource finds its drive by blkid (label config-2), which only sees
block devices: whole disks and the partitions in their tables. So after an image is written the
drive must be a partition-table entry. Checked on sparse image files with the real tools, the way
the OS will see them: sfdisk reads the table, `blkid -p` at the partition's offset reads the file
system (no loop partition scanning here, TESTBED-NOTES)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.agent import configdrive
from activities.agent.devices import BlockDevice
from activities.configdrive import build_iso
from testbed.debian_image import sha256_file

MIB = 1 << 20
GIB = 1 << 30

pytestmark = pytest.mark.skipif(
    not (shutil.which("sfdisk") and shutil.which("blkid")), reason="sfdisk (fdisk) or blkid missing"
)


@pytest.fixture(scope="module")
def iso() -> bytes:
    return build_iso(
        {
            "openstack/latest/meta_data.json": json.dumps({"uuid": "i-123", "hostname": "h0"}).encode(),
            "openstack/latest/user_data": b"#cloud-config\nhostname: h0\n",
        }
    )


def disk(tmp_path: Path, size: int, layout: str | None) -> BlockDevice:
    """A sparse disk with an image's partition table (sfdisk script LAYOUT) written at its start,
    as the agent leaves it after writing a smaller image: the table describes the image only."""
    path = tmp_path / "disk.img"
    if layout is not None:
        image = tmp_path / "image.raw"
        with image.open("wb") as f:
            f.truncate(300 * MIB)
        subprocess.run(["sfdisk", "-q", str(image)], input=layout, text=True, check=True, capture_output=True)
        with image.open("rb") as src, path.open("wb") as dst:
            dst.write(src.read(2 * MIB))
            dst.seek(299 * MIB)
            src.seek(299 * MIB)
            dst.write(src.read())  # the image's backup GPT, at the image's end
    with path.open("ab") as f:
        f.truncate(size)
    return BlockDevice(name="/dev/sda", path=path, size_bytes=size)


def table(dev: BlockDevice) -> dict[str, object]:
    out = subprocess.run(
        ["sfdisk", "--json", str(dev.path)], capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out)["partitiontable"])


def probe(dev: BlockDevice, start: int, size: int) -> dict[str, str]:
    out = subprocess.run(
        ["blkid", "-p", "-O", str(start), "-S", str(size), "-o", "export", str(dev.path)],
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def digest(dev: BlockDevice) -> str:
    return sha256_file(dev.path)


GPT = "label: gpt\nstart=2048, size=204800, type=linux, name=root\n"
MBR = "label: dos\nstart=2048, size=204800, type=83, bootable\n"


def test_gpt_image_gets_a_config2_partition_at_the_disk_end_and_the_backup_table_moves(
    tmp_path: Path, iso: bytes
) -> None:
    dev = disk(tmp_path, 8 * GIB, GPT)
    offset = configdrive.write(dev, iso)
    t = table(dev)
    parts = t["partitions"]
    assert isinstance(parts, list) and len(parts) == 2
    cd = parts[1]
    assert cd["name"] == "config-2" and cd["start"] * 512 == offset == 8 * GIB - 64 * MIB
    assert (cd["start"] + cd["size"]) * 512 <= 8 * GIB - 33 * 512  # before the backup table
    # the backup GPT is at the disk's end now: sfdisk --verify finds nothing wrong
    verify = subprocess.run(["sfdisk", "--verify", str(dev.path)], capture_output=True, text=True)
    assert verify.returncode == 0 and "backup" not in (verify.stdout + verify.stderr).lower()
    found = probe(dev, offset, cd["size"] * 512)
    assert found.get("TYPE") == "iso9660" and found.get("LABEL") == "config-2"
    with dev.path.open("rb") as f:
        f.seek(offset)
        assert f.read(len(iso)) == iso

    # a retried write (or a redeploy of the same image) reuses the partition
    assert configdrive.write(dev, iso) == offset
    parts_again = table(dev)["partitions"]
    assert isinstance(parts_again, list) and len(parts_again) == 2


def test_mbr_image_gets_a_primary_partition_in_the_last_64_mib(tmp_path: Path, iso: bytes) -> None:
    dev = disk(tmp_path, 4 * GIB, MBR)
    offset = configdrive.write(dev, iso)
    parts = table(dev)["partitions"]
    assert isinstance(parts, list) and len(parts) == 2
    cd = parts[1]
    assert cd["node"].endswith("2") and cd["type"] == "83"  # a primary partition
    assert cd["start"] * 512 == offset == 4 * GIB - 64 * MIB and (cd["start"] + cd["size"]) * 512 == 4 * GIB
    found = probe(dev, offset, cd["size"] * 512)
    assert found.get("TYPE") == "iso9660" and found.get("LABEL") == "config-2"
    assert configdrive.write(dev, iso) == offset and len(table(dev)["partitions"]) == 2  # type: ignore[arg-type]


def test_mbr_beyond_2_tib_puts_the_partition_below_the_limit(tmp_path: Path, iso: bytes) -> None:
    dev = disk(tmp_path, 3 << 40, MBR)  # sparse: nothing but the table and the drive is written
    offset = configdrive.write(dev, iso)
    cd = table(dev)["partitions"][1]  # type: ignore[index]
    assert offset == (2 << 40) - 64 * MIB and (cd["start"] + cd["size"]) * 512 == 2 << 40


def test_mbr_with_four_primary_partitions_is_refused_before_anything_is_written(
    tmp_path: Path, iso: bytes
) -> None:
    full = "label: dos\n" + "".join(f"start={2048 + i * 20480}, size=20480, type=83\n" for i in range(4))
    dev = disk(tmp_path, 512 * MIB, full)
    before = digest(dev)
    with pytest.raises(ApplicationError) as err:
        configdrive.write(dev, iso)
    assert err.value.type == "ConfigDrivePartitionError" and err.value.non_retryable
    assert "four primary partitions" in str(err.value) and "GPT" in str(err.value)
    assert digest(dev) == before


def test_an_image_as_large_as_the_disk_leaves_no_room_and_is_refused(tmp_path: Path, iso: bytes) -> None:
    dev = disk(tmp_path, 300 * MIB, "label: gpt\nstart=2048, type=linux, name=root\n")
    before = digest(dev)
    with pytest.raises(ApplicationError) as err:
        configdrive.write(dev, iso)
    assert err.value.type == "ConfigDrivePartitionError" and "no room" in str(err.value)
    assert "larger root device" in str(err.value)
    assert digest(dev) == before


def test_no_partition_table_keeps_the_raw_last_64_mib(tmp_path: Path, iso: bytes) -> None:
    dev = disk(tmp_path, 1 * GIB, None)
    offset = configdrive.write(dev, iso)
    assert offset == 1 * GIB - 64 * MIB
    assert probe(dev, offset, 64 * MIB).get("LABEL") == "config-2"
    assert (
        subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "PTTYPE", str(dev.path)], capture_output=True
        ).stdout
        == b""
    )
