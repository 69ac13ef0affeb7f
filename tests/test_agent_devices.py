"""The agent's disk discovery on sysfs trees laid out as the kernel lays them out, and on this machine's /sys.

Each fake tree mirrors a real one: the disk under its parent device (virtio, SCSI device, NVMe
controller or subsystem), `device` and `subsystem` links spelled as sysfs spells them, and the
binary SCSI VPD pages libata and SAS disks expose.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from activities.agent.config import AgentConfig
from activities.agent.devices import BlockDevice, list_devices

Attrs = Mapping[str, str | bytes | None]  # None: a directory


def kernel_link(at: Path, target: Path) -> None:
    """A symlink as sysfs spells it: up to the nearest ancestor of the target's parent, then down."""
    base = Path(os.path.commonpath([at.parent, target.parent]))
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(Path(*[".."] * len(at.parent.relative_to(base).parts), target.relative_to(base)))


def write(where: Path, attrs: Attrs) -> None:
    for name, value in attrs.items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if value is None:
            path.mkdir()
        elif isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value + "\n")


def plant(
    root: Path, parent: str, subsystem: str, name: str, dev: Attrs, disk: Attrs, block_dir: bool = True
) -> None:
    """sys/devices/<parent> is the disk's parent device with its attributes and subsystem link; the
    disk is <parent>/block/<name> (NVMe namespaces sit right under the controller or subsystem)
    with a `device` link back; sys/block/<name> links to the disk."""
    sys = root / "sys"
    parent_dir = sys / "devices" / parent
    disk_dir = parent_dir / "block" / name if block_dir else parent_dir / name
    write(parent_dir, dev)
    write(disk_dir, {"removable": "0", "queue/rotational": "0", **disk})
    (sys / subsystem).mkdir(parents=True, exist_ok=True)
    if not (parent_dir / "subsystem").is_symlink():
        kernel_link(parent_dir / "subsystem", sys / subsystem)
    kernel_link(disk_dir / "device", parent_dir)
    kernel_link(sys / "block" / name, disk_dir)


def pg80(serial: bytes) -> bytes:
    """SCSI VPD page 0x80 as the kernel exposes it: peripheral byte, page code, length, serial."""
    return bytes([0x00, 0x80, 0x00, len(serial)]) + serial


def pg83(*designators: tuple[int, int, bytes]) -> bytes:
    """SCSI VPD page 0x83 from (code set, association/type byte, id) designators."""
    body = b"".join(bytes([code, flags, 0, len(ident)]) + ident for code, flags, ident in designators)
    return bytes([0x00, 0x83]) + len(body).to_bytes(2, "big") + body


def discover(root: Path) -> list[BlockDevice]:
    return list_devices(AgentConfig(host_id="default.h0", sys_root=root))


def virtio_disk(root: Path, name: str, pci: str, index: int, disk: Attrs) -> None:
    plant(
        root,
        f"pci0000:00/{pci}/virtio{index}",
        "bus/virtio",
        name,
        {"vendor": "0x1af4", "device": "0x0002"},
        disk,
    )


def test_virtio_blk_serial_from_the_disk_and_no_pci_vendor(tmp_path: Path) -> None:
    virtio_disk(
        tmp_path,
        "vda",
        "0000:00:05.0",
        2,
        {"size": "41943040", "serial": "vm-root-0001", "queue/rotational": "1"},
    )

    [vda] = discover(tmp_path)

    assert vda == BlockDevice(
        name="/dev/vda",
        path=Path("/dev/vda"),
        size_bytes=41943040 * 512,
        serial="vm-root-0001",
        rotational=True,
        bus="virtio",
    )
    assert vda.to_storage().type == "HDD"


AHCI = "pci0000:00/0000:00:1f.2"


def test_sata_behind_ahci_serial_from_vpd_page_80(tmp_path: Path) -> None:
    # QEMU's ide-hd on ich9-ahci without a wwn: the kernel's wwid is the T10 vendor form, no WWN.
    qemu = "QEMU HARDDISK"
    plant(
        tmp_path,
        f"{AHCI}/ata1/host0/target0:0:0/0:0:0:0",
        "bus/scsi",
        "sda",
        {
            "vendor": "ATA     ",
            "model": f"{qemu:<16}",
            "rev": "2.5+",
            "wwid": f"t10.ATA     {qemu:<40}QM00001",
            "vpd_pg80": pg80(b"QM00001".ljust(20)),
            "scsi_device/0:0:0:0": None,
        },
        {"size": "20971520", "queue/rotational": "1"},
    )
    # A real drive: serial right-aligned in its 20 bytes, WWN in IDENTIFY so the kernel names it naa.
    plant(
        tmp_path,
        f"{AHCI}/ata2/host1/target1:0:0/1:0:0:0",
        "bus/scsi",
        "sdb",
        {
            "vendor": "ATA     ",
            "model": "WDC WD10EFRX-68F",
            "wwid": "naa.50014ee2b5a1c3d4",
            "vpd_pg80": pg80(b"WD-WCC4J1234567".rjust(20)),
            "scsi_device/1:0:0:0": None,
        },
        {"size": "1953525168", "queue/rotational": "1"},
    )

    sda, sdb = discover(tmp_path)

    assert sda == BlockDevice(
        name="/dev/sda",
        path=Path("/dev/sda"),
        size_bytes=20971520 * 512,
        model=qemu,
        vendor="ATA",
        serial="QM00001",
        rotational=True,
        hctl="0:0:0:0",
        bus="sata",
    )
    assert (sdb.serial, sdb.wwn, sdb.wwn_vendor_extension, sdb.wwn_with_extension) == (
        "WD-WCC4J1234567",
        "0x50014ee2b5a1c3d4",
        "",
        "0x50014ee2b5a1c3d4",
    )
    assert (sdb.bus, sdb.hctl, sdb.model) == ("sata", "1:0:0:0", "WDC WD10EFRX-68F")


def test_sas_disk_wwn_from_vpd_page_83_when_the_kernel_has_no_wwid(tmp_path: Path) -> None:
    # A SAS disk names itself (the unit), then its target port: only the unit's NAA is its WWN.
    unit, port = bytes.fromhex("5000c500a1b2c3d7"), bytes.fromhex("5000c500a1b2c3d5")
    plant(
        tmp_path,
        "pci0000:00/0000:00:03.0/0000:03:00.0/host2/port-2:0/end_device-2:0/target2:0:0/2:0:0:0",
        "bus/scsi",
        "sdc",
        {
            "vendor": "SEAGATE ",
            "model": "ST1200MM0099    ",
            "sas_address": "0x5000c500a1b2c3d5",
            "vpd_pg80": pg80(b"WFK0ABCD0000K123ABCD"),
            "vpd_pg83": pg83((0x61, 0x93, port), (0x02, 0x01, b"SEAGATE ST1200MM0099"), (0x01, 0x03, unit)),
            "scsi_device/2:0:0:0": None,
        },
        {"size": "2344225968", "queue/rotational": "1"},
    )

    [sdc] = discover(tmp_path)

    assert (sdc.bus, sdc.vendor, sdc.model, sdc.serial) == (
        "sas",
        "SEAGATE",
        "ST1200MM0099",
        "WFK0ABCD0000K123ABCD",
    )
    assert (sdc.wwn, sdc.wwn_vendor_extension, sdc.hctl) == ("0x5000c500a1b2c3d7", "", "2:0:0:0")


def test_raid_volume_splits_a_registered_extended_naa_as_udev_does(tmp_path: Path) -> None:
    plant(
        tmp_path,
        "pci0000:00/0000:00:02.0/0000:02:00.0/host0/target0:2:0/0:2:0:0",
        "bus/scsi",
        "sda",
        {
            "vendor": "AVAGO   ",
            "model": "MR9361-8i       ",
            "wwid": "naa.600605b00d4d6f20249a7f9c1a2b3c4d",
            "vpd_pg80": pg80(b"004d3c2b1a9c7f9a24206f4d0db00506"),
            "scsi_device/0:2:0:0": None,
        },
        {"size": "3905945600"},
    )

    [sda] = discover(tmp_path)

    assert sda.bus == "scsi"
    storage = sda.to_storage()
    assert (storage.wwn, storage.wwn_vendor_extension, storage.wwn_with_extension) == (
        "0x600605b00d4d6f20",
        "0x249a7f9c1a2b3c4d",
        "0x600605b00d4d6f20249a7f9c1a2b3c4d",
    )
    assert (storage.type, storage.vendor, storage.serial_number) == (
        "SSD",
        "AVAGO",
        "004d3c2b1a9c7f9a24206f4d0db00506",
    )


NVME_CTRL = "pci0000:00/0000:00:04.0/nvme/nvme0"
NVME_ATTRS: Attrs = {
    "serial": "S4EWNX0R123456      ",
    "model": "Samsung SSD 970 EVO Plus 1TB            ",
    "firmware_rev": "2B2QEXM7",
}


def test_nvme_namespaces_under_their_controller(tmp_path: Path) -> None:
    ns = {"nsid": "1", "queue/logical_block_size": "4096"}
    ctrl = {**NVME_ATTRS, "transport": "pcie"}
    plant(
        tmp_path,
        NVME_CTRL,
        "class/nvme",
        "nvme0n1",
        ctrl,
        {**ns, "size": "1953525168", "wwid": "eui.0025388b91b2c3d4"},
        False,
    )
    # QEMU with no EUI-64/NGUID/UUID: the kernel builds the nvme.<vid>-<serial>-<model>-<nsid> form.
    qemu = "nvme.1b36-6465616462656566-51454d55204e564d65204374726c-00000002"
    plant(
        tmp_path,
        NVME_CTRL,
        "class/nvme",
        "nvme0n2",
        ctrl,
        {**ns, "nsid": "2", "size": "2097152", "wwid": qemu},
        False,
    )

    n1, n2 = discover(tmp_path)

    # Sizes stay 512-byte sectors with 4 KiB logical blocks; wwn is the wwid as udev's ID_WWN has it.
    assert n1 == BlockDevice(
        name="/dev/nvme0n1",
        path=Path("/dev/nvme0n1"),
        size_bytes=1953525168 * 512,
        model="Samsung SSD 970 EVO Plus 1TB",
        serial="S4EWNX0R123456",
        wwn="eui.0025388b91b2c3d4",
        bus="nvme",
    )
    assert (n2.wwn, n2.size_bytes, n2.serial) == (qemu, 2097152 * 512, "S4EWNX0R123456")
    assert [n.to_storage().type for n in (n1, n2)] == ["NVME", "NVME"]


def test_nvme_multipath_reports_the_head_not_its_paths(tmp_path: Path) -> None:
    subsys = "virtual/nvme-subsystem/nvme-subsys0"
    head = {"size": "1953525168", "wwid": "uuid.5d6e2f1a-3b4c-4d5e-8f90-a1b2c3d4e5f6", "nsid": "1"}
    plant(
        tmp_path,
        subsys,
        "class/nvme-subsystem",
        "nvme0n1",
        {**NVME_ATTRS, "subsysnqn": "nqn.2014.08.org.nvmexpress:144d"},
        head,
        False,
    )
    # One leg per controller: hidden=1 on current kernels; older ones lack the attribute, the name tells.
    plant(
        tmp_path,
        NVME_CTRL,
        "class/nvme",
        "nvme0c0n1",
        {**NVME_ATTRS, "transport": "pcie"},
        {**head, "hidden": "1"},
        False,
    )
    ctrl1 = "pci0000:00/0000:00:05.0/nvme/nvme1"
    plant(tmp_path, ctrl1, "class/nvme", "nvme0c1n1", {**NVME_ATTRS, "transport": "pcie"}, head, False)

    [n1] = discover(tmp_path)

    assert (n1.name, n1.bus, n1.serial, n1.model) == (
        "/dev/nvme0n1",
        "nvme",
        "S4EWNX0R123456",
        "Samsung SSD 970 EVO Plus 1TB",
    )
    assert n1.wwn == head["wwid"]


def test_skips_virtual_optical_removable_and_empty_devices(tmp_path: Path) -> None:
    virtio_disk(tmp_path, "vda", "0000:00:05.0", 2, {"size": "41943040"})
    for name in ("loop0", "ram0", "zram0", "dm-0", "md127", "nbd0"):  # no parent device: no `device` link
        disk = tmp_path / "sys" / "devices" / "virtual" / "block" / name
        write(disk, {"size": "2048", "removable": "0"})
        kernel_link(tmp_path / "sys" / "block" / name, disk)
    cdrom = {"vendor": "QEMU    ", "model": "QEMU DVD-ROM    ", "scsi_device/1:0:0:0": None}
    plant(
        tmp_path,
        f"{AHCI}/ata2/host1/target1:0:0/1:0:0:0",
        "bus/scsi",
        "sr0",
        cdrom,
        {"size": "2048", "removable": "1"},
    )
    usb = "pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0"
    plant(tmp_path, usb, "bus/scsi", "sdd", {"vendor": "SanDisk "}, {"size": "60063744", "removable": "1"})
    # A card reader or virtual floppy with no medium: size 0.
    plant(
        tmp_path,
        "pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host7/target7:0:0/7:0:0:0",
        "bus/scsi",
        "sde",
        {},
        {"size": "0"},
    )

    assert [d.name for d in discover(tmp_path)] == ["/dev/vda"]


def test_storage_type_nvme_follows_the_bus_not_the_name(tmp_path: Path) -> None:
    named_nvme = BlockDevice(name="/dev/nvme-lookalike", path=tmp_path / "d", size_bytes=1 << 30)
    attached_nvme = BlockDevice(name="/dev/disk0", path=tmp_path / "d", size_bytes=1 << 30, bus="nvme")
    spinning_nvme = BlockDevice(
        name="/dev/nvme1n1", path=tmp_path / "d", size_bytes=1 << 30, bus="nvme", rotational=True
    )

    assert [d.to_storage().type for d in (named_nvme, attached_nvme, spinning_nvme)] == ["SSD", "NVME", "HDD"]


REAL_VDA = Path("/sys/block/vda")


@pytest.mark.skipif(not REAL_VDA.exists(), reason="no virtio disk vda on this machine")
def test_this_machines_sysfs(tmp_path: Path) -> None:
    found = {d.name: d for d in discover(Path("/"))}

    vda = found["/dev/vda"]
    assert vda.size_bytes == int((REAL_VDA / "size").read_text()) * 512 > 0
    assert vda.bus == "virtio"
    assert vda.serial == ((REAL_VDA / "serial").read_text().strip() if (REAL_VDA / "serial").exists() else "")
    assert vda.rotational == ((REAL_VDA / "queue" / "rotational").read_text().strip() == "1")
    assert not [n for n in found if n.startswith(("/dev/loop", "/dev/zram", "/dev/ram"))]

    # The fake trees above spell their links as this kernel does.
    parent = Path(os.path.realpath(REAL_VDA)).parent.parent  # .../virtioN/block/vda
    plant(tmp_path, str(parent.relative_to("/sys/devices")), "bus/virtio", "vda", {}, {"size": "1"})
    fake = tmp_path / "sys" / "block" / "vda"
    for link in ("", "device", "device/subsystem"):
        assert os.readlink(fake / link) == os.readlink(REAL_VDA / link), link
