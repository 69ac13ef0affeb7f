"""Verified erase (spec.erase): every disk planned before any is erased, the disk's own command
where it has one, read-back past the page cache, a per-disk record.

Overwrite runs for real on files and on loop devices (real block devices, O_DIRECT read-back).
NVMe Format and ATA security erase need the hardware: here nvme-cli and hdparm are stand-ins on
PATH that answer as the real tools do (their JSON and `-I` text) and act on the file; the real
NVMe Format runs on QEMU's NVMe disk in tests/e2e/test_realos_deploy.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.agent import erase
from activities.agent.devices import BlockDevice
from metalflow.api.erase import EraseMethod, EraseSpec
from metalflow.api.errors import ErrorName
from metalflow.api.models import HostSpec
from metalflow.api.validation import SpecError, validate_spec

MIB = 1 << 20
CUSTOMER = b"customer data! " * 273  # not block-aligned, so it straddles sample blocks

ATA_SUPPORTED = """
/dev/sda:

ATA device, with non-removable media
\tModel Number:       ST1000DM010-2EP102
\tSerial Number:      Z9A1B2C3
Commands/features:
\tEnabled\tSupported:
\t   *\tSMART feature set
Security: 
\tMaster password revision code = 65534
\t\tsupported
\tnot\tenabled
\tnot\tlocked
\tnot\tfrozen
\tnot\texpired: security count
\t\tsupported: enhanced erase
\t106min for SECURITY ERASE UNIT. 106min for ENHANCED SECURITY ERASE UNIT.
Logical Unit WWN Device Identifier: 5000c500a1b2c3d4
Checksum: correct
"""
ATA_FROZEN = ATA_SUPPORTED.replace("\tnot\tfrozen", "\t\tfrozen")
ATA_UNSUPPORTED = """
/dev/sda:

ATA device, with non-removable media
\tModel Number:       QEMU HARDDISK
\tSerial Number:      QM00001
Commands/features:
\tEnabled\tSupported:
\t   *\tSMART feature set
Checksum: correct
"""


def disk(tmp_path: Path, name: str, bus: str = "file", size: int = 8 * MIB, serial: str = "S") -> BlockDevice:
    path = tmp_path / f"{name.rsplit('/', 1)[-1]}.img"
    with path.open("wb") as f:
        os.truncate(f.fileno(), size)
    with path.open("r+b") as f:  # customer data at both ends and in the middle
        for off in (0, size // 2 + 123, size - len(CUSTOMER)):
            f.seek(off)
            f.write(CUSTOMER)
    return BlockDevice(name=name, path=path, size_bytes=size, serial=serial, bus=bus)  # type: ignore[arg-type]


def holds_customer_data(dev: BlockDevice) -> bool:
    return CUSTOMER in dev.path.read_bytes()


def fake_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, oacs: int, fna: int, hdparm_i: str
) -> Path:
    """nvme and hdparm stand-ins: answer as the real ones and erase the file they are given."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls.log"
    (tmp_path / "hdparm-I.txt").write_text(hdparm_i)
    script = f"""#!{sys.executable}
import json, os, sys
argv = sys.argv
with open({str(calls)!r}, "a") as log:
    log.write(json.dumps(argv) + "\\n")
tool, dev = os.path.basename(argv[0]), [a for a in argv[1:] if a.startswith("/")][-1]
def fill(byte):
    size = os.path.getsize(dev)
    with open(dev, "r+b") as f:
        f.write(bytes([byte]) * size)
if tool == "nvme" and argv[1] == "id-ctrl":
    print(json.dumps({{"vid": 6966, "sn": "NVME0001", "oacs": {oacs}, "fna": {fna}}}))
elif tool == "nvme" and argv[1] == "format":
    fill(0xFF if "--ses=1" in argv else 0x5A)  # a deallocated-reads-ones drive; crypto: noise
elif tool == "hdparm" and argv[1] == "-I":
    print(open({str(tmp_path / "hdparm-I.txt")!r}).read())
elif tool == "hdparm" and "--security-erase-enhanced" in argv:
    fill(0xA5)
elif tool == "hdparm" and "--security-erase" in argv:
    if os.environ.get("FAIL_ATA_ERASE"):  # hdparm echoes the password it was given
        print(f'security_password: "{{argv[-2]}}"'); print("SECURITY_ERASE: Input/output error"); sys.exit(5)
    fill(0)
"""
    for tool in ("nvme", "hdparm"):
        (bindir / tool).write_text(script)
        (bindir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return calls


def calls_of(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_auto_picks_the_fastest_method_each_disk_supports_and_verifies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_tools(tmp_path, monkeypatch, oacs=0x2, fna=0, hdparm_i=ATA_UNSUPPORTED)
    disks = [
        disk(tmp_path, "/dev/vda", "virtio", serial="V1"),
        disk(tmp_path, "/dev/sda", "sata", serial="QM00001"),
        disk(tmp_path, "/dev/nvme0n1", "nvme", serial="NVME0001"),
    ]
    spec = EraseSpec(verify_samples=16)
    planned = erase.plan(disks, spec)
    assert [(p.device.name, p.method) for p in planned] == [
        ("/dev/vda", EraseMethod.OVERWRITE),
        ("/dev/sda", EraseMethod.OVERWRITE),  # AHCI without the ATA security feature set
        ("/dev/nvme0n1", EraseMethod.NVME_FORMAT),  # no crypto erase (FNA bit 2 clear)
    ]
    records = [erase.erase_disk(p, spec, lambda n: None) for p in planned]
    for dev, rec in zip(disks, records, strict=True):
        assert not holds_customer_data(dev), dev.name
        assert (rec.device, rec.serial, rec.size_bytes) == (dev.name, dev.serial, dev.size_bytes)
        assert rec.samples >= 2 and rec.result == "erased" and rec.finished_at is not None
    assert [r.verified for r in records] == ["zeroes", "zeroes", "blank"]
    formats = [c for c in calls_of(calls) if c[1] == "format"]
    assert formats == [[str(tmp_path / "bin" / "nvme"), "format", str(disks[2].path), "--ses=1", "--force"]]


def test_crypto_erase_is_preferred_when_the_controller_offers_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools(tmp_path, monkeypatch, oacs=0x2, fna=0x4, hdparm_i=ATA_UNSUPPORTED)
    dev = disk(tmp_path, "/dev/nvme0n1", "nvme")
    (planned,) = erase.plan([dev], EraseSpec())
    assert planned.method == EraseMethod.NVME_CRYPTO_ERASE
    rec = erase.erase_disk(planned, EraseSpec(), lambda n: None)
    assert rec.verified == "changed" and not holds_customer_data(dev)


def test_a_method_a_disk_lacks_fails_before_any_disk_is_erased(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATA secure erase asked for, the AHCI disk has no security feature set (as QEMU's):
    a typed error naming the disk, the field and the fix; every disk still holds its data."""
    calls = fake_tools(tmp_path, monkeypatch, oacs=0x2, fna=0, hdparm_i=ATA_UNSUPPORTED)
    disks = [disk(tmp_path, "/dev/vda", "virtio"), disk(tmp_path, "/dev/sda", "sata", serial="QM00001")]
    with pytest.raises(ApplicationError) as err:
        erase.plan(disks, EraseSpec(method=EraseMethod.ATA_SECURE_ERASE))
    assert err.value.type == ErrorName.ERASE_UNSUPPORTED and err.value.non_retryable
    msg = str(err.value)
    assert "spec.erase.method ataSecureErase" in msg and "Nothing was erased" in msg
    assert "/dev/sda (serial QM00001, sata)" in msg and "does not support the ATA security feature set" in msg
    assert "/dev/vda" in msg and "is not a SATA disk" in msg and "it supports overwrite" in msg
    assert all(holds_customer_data(d) for d in disks)
    assert not any("--security-set-pass" in c for c in calls_of(calls))


def test_frozen_ata_security_is_refused_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tools(tmp_path, monkeypatch, oacs=0, fna=0, hdparm_i=ATA_FROZEN)
    dev = disk(tmp_path, "/dev/sda", "sata")
    with pytest.raises(ApplicationError, match=r"frozen .*suspend/resume"):
        erase.plan([dev], EraseSpec(method=EraseMethod.ATA_SECURE_ERASE))
    assert holds_customer_data(dev)


def test_ata_secure_erase_sets_a_one_time_password_and_never_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_tools(tmp_path, monkeypatch, oacs=0, fna=0, hdparm_i=ATA_SUPPORTED)
    dev = disk(tmp_path, "/dev/sda", "sata")
    spec = EraseSpec(method=EraseMethod.ATA_SECURE_ERASE)
    (planned,) = erase.plan([dev], spec)
    rec = erase.erase_disk(planned, spec, lambda n: None)
    assert rec.verified == "changed"  # enhanced erase writes the vendor's pattern
    ran = calls_of(calls)
    set_pass = next(c for c in ran if "--security-set-pass" in c)
    password = set_pass[set_pass.index("--security-set-pass") + 1]
    assert len(password) == 16
    assert next(c for c in ran if "--security-erase-enhanced" in c)[-2] == password
    assert password not in rec.model_dump_json()


def test_a_failed_ata_erase_unlocks_the_disk_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_tools(
        tmp_path, monkeypatch, oacs=0, fna=0, hdparm_i=ATA_SUPPORTED.replace("supported: enhanced erase", "")
    )
    monkeypatch.setenv("FAIL_ATA_ERASE", "1")
    dev = disk(tmp_path, "/dev/sda", "sata", serial="Z9A1")
    spec = EraseSpec(method=EraseMethod.ATA_SECURE_ERASE)
    (planned,) = erase.plan([dev], spec)
    with pytest.raises(ApplicationError) as err:
        erase.erase_disk(planned, spec, lambda n: None)
    assert err.value.type == ErrorName.ERASE_FAILED
    assert "/dev/sda (serial Z9A1, sata)" in str(err.value) and "Input/output error" in str(err.value)
    ran = calls_of(calls)
    set_pass = next(c for c in ran if "--security-set-pass" in c)
    password = set_pass[set_pass.index("--security-set-pass") + 1]
    assert any("--security-disable" in c and password in c for c in ran)
    assert password not in str(err.value)


def test_read_back_catches_an_erase_that_did_not_happen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verification is not a formality: an overwrite that writes nothing fails, typed."""
    dev = disk(tmp_path, "/dev/vda", "virtio")
    monkeypatch.setattr(erase.cleaning, "erase", lambda d, progress: 0)
    spec = EraseSpec(method=EraseMethod.OVERWRITE)
    with pytest.raises(ApplicationError) as err:
        erase.erase_disk(erase.plan([dev], spec)[0], spec, lambda n: None)
    assert err.value.type == ErrorName.ERASE_FAILED and "is not zeroes" in str(err.value)


def test_hdparm_security_section_parsing() -> None:
    assert erase.ata_security(ATA_SUPPORTED) == (True, False, True)
    assert erase.ata_security(ATA_FROZEN) == (True, True, True)
    assert erase.ata_security(ATA_UNSUPPORTED) == (False, False, False)
    not_supported = ATA_SUPPORTED.replace("\t\tsupported\n", "\tnot\tsupported\n")
    assert erase.ata_security(not_supported)[0] is False


def test_spec_erase_is_checked_where_it_is_written() -> None:
    bmc = {"address": "redfish://192.0.2.10/redfish/v1/Systems/1", "credentials": {"name": "bmc"}}
    with pytest.raises(ValueError, match=r"spec\.erase\.allowedMethods: list concrete methods"):
        HostSpec.model_validate({"bmc": bmc, "erase": {"allowedMethods": ["auto"]}})
    with pytest.raises(ValueError, match=r"not in spec\.erase\.allowedMethods"):
        HostSpec.model_validate(
            {"bmc": bmc, "erase": {"method": "nvmeFormat", "allowedMethods": ["overwrite"]}}
        )
    with pytest.raises(ValueError, match="Input should be 'auto'"):
        HostSpec.model_validate({"bmc": bmc, "erase": {"method": "shred"}})
    disabled = HostSpec.model_validate({"bmc": bmc, "erase": {}, "automatedCleaningMode": "disabled"})
    with pytest.raises(SpecError, match=r"spec\.erase: cleaning is disabled"):
        validate_spec(disabled)


needs_loop = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("losetup") or not Path("/dev/loop-control").exists(),
    reason="needs root and loop devices",
)


@needs_loop
def test_overwrite_on_a_loop_device_reads_back_past_the_page_cache(tmp_path: Path) -> None:
    """A real block device: erase, then O_DIRECT samples (the page cache still holds the old data)."""
    backing = disk(tmp_path, "backing", size=16 * MIB)
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(backing.path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        dev = BlockDevice(name=loop, path=Path(loop), size_bytes=16 * MIB, serial="LOOP", bus="other")
        assert CUSTOMER[:64] in erase.read_samples(dev, [0])[0]
        spec = EraseSpec(method=EraseMethod.OVERWRITE, verify_samples=32)
        (planned,) = erase.plan([dev], spec)
        rec = erase.erase_disk(planned, spec, lambda n: None)
        assert rec.verified == "zeroes" and rec.samples >= 2
        with open(loop, "rb") as f:
            assert f.read().count(0) == 16 * MIB
    finally:
        subprocess.run(["losetup", "--detach", loop], check=False)
    assert not holds_customer_data(backing)


@needs_loop
def test_read_back_sees_what_the_disk_did_behind_the_page_cache(tmp_path: Path) -> None:
    """NVMe Format changes the medium behind the kernel's back: the block device's page cache still
    holds the old data. The read-back must not be fooled by it (O_DIRECT)."""
    backing = disk(tmp_path, "backing", size=4 * MIB)
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(backing.path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        # something keeps the disk open (the last close would drop its cache) and read the old data
        holder = os.open(loop, os.O_RDONLY)
        assert CUSTOMER[:64] in os.pread(holder, 8192, 0)
        fd = os.open(backing.path, os.O_WRONLY)  # "the drive erased itself"
        os.pwrite(fd, bytes(8192), 0)
        os.fsync(fd)
        os.close(fd)
        stale = os.pread(holder, 8192, 0)
        dev = BlockDevice(name=loop, path=Path(loop), size_bytes=4 * MIB, bus="other")
        fresh = erase.read_samples(dev, [0, 4096])
        assert fresh == [bytes(4096), bytes(4096)], "the read-back came from the page cache"
        assert CUSTOMER[:64] in stale  # the cache really was stale: this test can tell the two apart
        os.close(holder)
    finally:
        subprocess.run(["losetup", "--detach", loop], check=False)
