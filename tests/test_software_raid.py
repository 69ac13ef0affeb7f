"""Software RAID planned before any disk is touched, and the kernel's md arrays read back.

The build itself (sgdisk, mdadm, the md driver) runs only in a VM: this machine's kernel has no
md driver. tests/e2e/test_realos_deploy.py (step 5) builds a RAID-1 in the deploy ramdisk,
writes the OS to it and boots it. Here: the plan the workflows check against the inventory and the
agent builds (metalflow/api/software_raid.py), the intake rules, and the agent's reading of
sysfs (a tree laid out as the kernel's /sys/block/md*).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.agent import softraid
from activities.agent.devices import BlockDevice
from metalflow.api.metal3_fields import RAIDConfig, SoftwareRAIDVolume
from metalflow.api.models import BMCDetails, BootMode, HostSpec, RootDeviceHints, SecretRef, Storage
from metalflow.api.software_raid import ESP_BYTES, SoftwareRAIDPlanError, inventory_problem, plan
from metalflow.api.validation import spec_problems

GIB = 1 << 30
DISKS = [
    Storage(name="/dev/sdb", size_bytes=100 * GIB, serial_number="B"),
    Storage(name="/dev/sda", size_bytes=50 * GIB, serial_number="A"),
    Storage(name="/dev/nvme0n1", size_bytes=400 * GIB, serial_number="N", type="NVME"),
]


def volume(level: str = "1", size: int | None = None, disks: list[str] | None = None, root: bool = False):  # type: ignore[no-untyped-def]
    hints = [RootDeviceHints(serial_number=s) for s in disks] if disks else None
    return SoftwareRAIDVolume(level=level, size_gibibytes=size, physical_disks=hints, root_volume=root)


def test_without_physical_disks_every_disk_holds_every_volume_and_the_first_is_root() -> None:
    p = plan(DISKS, [volume(size=10), volume(level="0")])
    assert p.holders == ("/dev/nvme0n1", "/dev/sda", "/dev/sdb")
    assert p.sizes == (10 * GIB, None) and p.root == 0


def test_physical_disks_pick_the_holders_in_their_order_and_root_volume_picks_the_root() -> None:
    p = plan(DISKS, [volume(size=10, disks=["B", "N"]), volume(level="1", disks=["B", "N"], root=True)])
    assert p.holders == ("/dev/sdb", "/dev/nvme0n1") and p.root == 1


@pytest.mark.parametrize(
    ("volumes", "disks", "field", "fix"),
    [
        (
            [volume(disks=["A", "Z"])],
            DISKS,
            "physicalDisks[1]: no other disk matches {'serialNumber': 'Z'}",
            "/dev/sdb",
        ),
        # one disk named twice: the second hint has nothing left to match
        ([volume(disks=["A", "A"])], DISKS, "physicalDisks[1]: no other disk matches", "serial='A'"),
        (
            [volume(size=1, disks=["A", "B"]), volume(disks=["A", "N"])],
            DISKS,
            "[*].physicalDisks",
            "the same disks",
        ),
        (
            [volume(level="0"), volume(size=5)],
            DISKS,
            "[0].sizeGibibytes: only the last volume",
            "give this one a size",
        ),
        (
            [volume(size=50)],
            DISKS,
            "sizeGibibytes: the volumes need 50.50 GiB",
            "/dev/sda has 50.00 GiB; ask for less",
        ),
        ([volume()], DISKS[:1], "software RAID needs at least two disks", "/dev/sdb 100.0GiB"),
    ],
)
def test_a_plan_that_cannot_work_names_the_field_and_the_fix(
    volumes: list[SoftwareRAIDVolume], disks: list[Storage], field: str, fix: str
) -> None:
    with pytest.raises(SoftwareRAIDPlanError) as err:
        plan(disks, volumes)
    assert field in str(err.value) and fix in str(err.value), err.value
    assert inventory_problem(volumes, disks) == str(err.value)


def test_the_largest_volume_that_fits_is_accepted() -> None:
    """50 GiB disk: the ESP, GPT's 2 MiB and the volume; one MiB more would not fit."""
    fits = (50 * GIB - ESP_BYTES - 2 * (1 << 20)) // GIB
    assert plan(DISKS, [volume(size=fits)]).sizes == (fits * GIB,)
    assert inventory_problem([volume(size=fits)], DISKS) is None
    assert inventory_problem(None, DISKS) is None  # nothing asked: nothing to judge


def spec(**kw) -> HostSpec:  # type: ignore[no-untyped-def]
    return HostSpec(
        bmc=BMCDetails(address="redfish://10.0.0.1/redfish/v1/Systems/1", credentials=SecretRef(name="bmc")),
        **kw,
    )


def test_intake_refuses_legacy_boot_and_root_device_hints_with_software_raid() -> None:
    raid = RAIDConfig(software_raid_volumes=[volume()])
    assert not [p for p in spec_problems(spec(raid=raid)) if "softwareRAIDVolumes" in p or "rootDevice" in p]
    legacy = spec_problems(spec(raid=raid, boot_mode=BootMode.LEGACY))
    assert any("set spec.bootMode: UEFI" in p for p in legacy), legacy
    hinted = spec_problems(spec(raid=raid, root_device_hints=RootDeviceHints(serial_number="A")))
    assert any(p.startswith("spec.rootDeviceHints:") and "remove rootDeviceHints" in p for p in hinted), (
        hinted
    )


def fake_md(sys_root: Path, name: str, level: str, members: list[str], sectors: int) -> None:
    md = sys_root / "sys" / "block" / name
    (md / "md").mkdir(parents=True)
    (md / "md" / "level").write_text(level + "\n")
    (md / "size").write_text(f"{sectors}\n")
    (md / "slaves").mkdir()
    for m in members:
        (md / "slaves" / m).mkdir()


def devices() -> list[BlockDevice]:
    return [
        BlockDevice(name=d.name, path=Path(d.name), size_bytes=d.size_bytes, serial=d.serial_number)
        for d in DISKS
    ]


def test_running_arrays_are_read_from_sysfs_and_kept_only_when_they_are_the_plan(tmp_path: Path) -> None:
    fake_md(tmp_path, "md127", "raid1", ["sdb2", "nvme0n1p2"], 2048)
    arrays = softraid.arrays(tmp_path)
    assert [(a.device, a.level, a.members, a.size_bytes) for a in arrays] == [
        ("/dev/md127", "1", ["/dev/nvme0n1p2", "/dev/sdb2"], 2048 * 512)
    ]
    layout = softraid.plan(devices(), [volume(disks=["B", "N"])])
    assert softraid.ensure(layout, tmp_path) == (arrays, False)  # kept: nothing run
    assert softraid.array_device("/dev/md127", tmp_path) == BlockDevice(
        name="/dev/md127", path=Path("/dev/md127"), size_bytes=2048 * 512, bus="other"
    )
    assert softraid.array_device("/dev/sdb", tmp_path) is None
    # the same members at another level, or another disk set: not the plan
    assert softraid.matching(softraid.plan(devices(), [volume(level="0", disks=["B", "N"])]), arrays) is None
    assert softraid.matching(softraid.plan(devices(), [volume(disks=["A", "N"])]), arrays) is None


def test_partition_names_follow_the_kernels_rule() -> None:
    assert softraid.partition_path("/dev/sda", 2) == "/dev/sda2"
    assert softraid.partition_path("/dev/nvme0n1", 2) == "/dev/nvme0n1p2"
    assert softraid.partition_path("/dev/md0", 3) == "/dev/md0p3"


def test_cleaning_a_kept_raid_wipes_the_arrays_and_each_holders_esp_not_the_disks(tmp_path: Path) -> None:
    fake_md(tmp_path, "md127", "raid1", ["sdb2", "nvme0n1p2"], 4096)
    for part, sectors in (("sdb1", 1048576), ("nvme0n1p1", 1048576)):
        (tmp_path / "sys" / "class" / "block" / part).mkdir(parents=True)
        (tmp_path / "sys" / "class" / "block" / part / "size").write_text(f"{sectors}\n")
    layout = softraid.plan(devices(), [volume(disks=["B", "N"])])
    parts = softraid.cleaned_parts(layout, tmp_path)
    assert [(p.name, p.size_bytes) for p in parts] == [
        ("/dev/md127", 4096 * 512),
        ("/dev/sdb1", 512 << 20),
        ("/dev/nvme0n1p1", 512 << 20),
    ]
