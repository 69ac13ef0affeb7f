"""The bad-input catalogue: every case gets a typed error naming the field and the fix, and
leaves nothing half-done (no secret written, no disk touched, nothing staged).

Spec errors go through `load_hosts(..., check=check_spec)`, exactly what `metalflow provision`
runs before it contacts Temporal; runtime errors go through the real activities against real
files and loopback HTTP. Cases already covered elsewhere are not repeated here: wrong BMC
password and missing system (test_bmc_activities), image 404 and checksum mismatch wiping
the disk (test_agent), missing credentials secret in a workflow and a rejected update
(test_lifecycle), BMC address forms (test_bmc_address).
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.www import NO_LENGTH
from history_scan import assert_no_secret_in, failure_of, scan_message
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from tests_support import malformed_yaml

from activities import bmc
from activities.agent import AgentActivities
from activities.agent.config import AgentConfig, FileDisk
from activities.configdrive import stage_configdrive
from activities.kubeadm import render_user_data
from metalflow.api.agent import CleanRequest, WriteImageRequest
from metalflow.api.bmc import BMCTarget
from metalflow.api.bmh import ManifestError
from metalflow.api.configdrive import ConfigDriveRequest
from metalflow.api.models import (
    ChecksumType,
    HostRef,
    ImageFormat,
    ImageSpec,
    JoinSpec,
    RootDeviceHints,
    SecretRef,
)
from metalflow.api.validation import SpecError
from metalflow.client.hostfile import load_hosts
from metalflow.client.operations import check_spec
from testbed.datacenter import write_secret
from testbed.images import BuiltImage, build_raw_image, convert_to_qcow2, sha256_of
from testbed.processes import free_port

GIB = 1 << 30
needs_qemu_img = pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img (qemu-utils) missing")
SECRET: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "node-0-bmc"},
    "stringData": {"username": "admin", "password": "change-me-bmc-password"},
}
URL_PASSWORD = "hunter2-in-the-url"
HOST: dict[str, Any] = {
    "apiVersion": "metal3.io/v1alpha1",
    "kind": "BareMetalHost",
    "metadata": {"name": "node-0"},
    "spec": {
        "online": True,
        "bootMACAddress": "52:54:00:00:00:01",
        "bmc": {
            "address": "redfish+http://10.0.0.10:8000/redfish/v1/Systems/1",
            "credentialsName": "node-0-bmc",
        },
        "image": {
            "url": "http://10.0.0.1/os.img",
            "checksum": "a" * 64,
            "checksumType": "sha256",
            "format": "raw",
        },
    },
}

Docs = list[Any]


def spec_of(docs: Docs) -> dict[str, Any]:
    return docs[1]["spec"]  # type: ignore[no-any-return]


def second_host(docs: Docs, **meta: Any) -> Docs:
    other = copy.deepcopy(docs[1])
    other["metadata"].update(meta)
    return [*docs, other]


def case(edit: Callable[[Docs], Docs | None], error: type[Exception], *fragments: str) -> Any:
    return (edit, error, fragments)


def _set(path: str, value: Any) -> Callable[[Docs], None]:
    def edit(docs: Docs) -> None:
        node = spec_of(docs)
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return edit


_DELETE = object()

SPEC_CASES = {
    "malformed BMC URL": case(
        _set("bmc.address", "redfish://"), SpecError, "spec.bmc.address", "no valid host"
    ),
    "unknown BMC scheme": case(
        _set("bmc.address", "gopher://10.0.0.10"),
        SpecError,
        "unknown BMC address scheme 'gopher'",
        "redfish://",
    ),
    "BMC port out of range": case(
        _set("bmc.address", "redfish://10.0.0.10:99999/redfish/v1/Systems/1"), SpecError, "invalid port"
    ),
    "password in the BMC URL": case(
        _set("bmc.address", f"redfish://admin:{URL_PASSWORD}@10.0.0.10/redfish/v1/Systems/1"),
        SpecError,
        "must not carry credentials",
        "Secret",
    ),
    "credentialsName missing": case(
        _set("bmc.credentialsName", _DELETE), ManifestError, "spec.bmc.credentialsName is required"
    ),
    "credentials Secret unnamed": case(
        lambda d: [{**SECRET, "metadata": {}}, d[1]], ManifestError, "Secret", "no metadata.name"
    ),
    "bootMACAddress malformed": case(
        _set("bootMACAddress", "52:54:00:zz:00:01"), ManifestError, "bootMACAddress", "00:11:22:33:44:55"
    ),
    # metal3 needs a MAC only for libvirt:// or with inspection disabled (a PXE boot without one
    # fails at boot with a clear error: activities/boot); tests/test_metal3_admission.py has both.
    "bootMACAddress missing with inspection disabled": case(
        lambda d: [
            d[0],
            {
                **d[1],
                "spec": {
                    **{k: v for k, v in spec_of(d).items() if k != "bootMACAddress"},
                    "inspectionMode": "disabled",
                },
            },
        ],
        SpecError,
        "spec.bootMACAddress",
        "requires a BootMACAddress value",
    ),
    "duplicate boot MAC": case(
        lambda d: second_host(d, name="node-1"), ManifestError, "52:54:00:00:00:01 is used by both"
    ),
    "duplicate host": case(lambda d: second_host(d), ManifestError, "names host default/node-0 twice"),
    "host name not a Kubernetes name": case(
        lambda d: [d[0], {**d[1], "metadata": {"name": "Node_0"}}], ManifestError, "host name 'Node_0'"
    ),
    "unknown spec field (typo)": case(_set("onlin", True), ManifestError, "spec.onlin", "Extra inputs"),
    "image URL not http": case(
        _set("image.url", "ftp://10.0.0.1/os.img"), ManifestError, "image.url", "http://"
    ),
    "image checksum missing": case(
        _set("image.checksum", _DELETE), ManifestError, "image.checksum is required", "live-iso"
    ),
    "unknown checksum type": case(
        _set("image.checksumType", "sha1"), ManifestError, "checksumType", "sha256"
    ),
    "checksum length wrong for its type": case(
        _set("image.checksum", "a" * 32), ManifestError, "32 hex digits", "sha256 needs 64"
    ),
    "checksum not hex": case(_set("image.checksum", "z" * 64), ManifestError, "hex digest"),
    "unsupported image format": case(_set("image.format", "vhd"), ManifestError, "image.format", "qcow2"),
    "negative root disk size": case(
        _set("rootDeviceHints", {"minSizeGigabytes": -1}),
        ManifestError,
        "minSizeGigabytes",
        "greater than or equal to 0",
    ),
    "userData not a Secret reference": case(
        _set("userData", "#cloud-config"), ManifestError, "spec.userData must be {name: <secret>"
    ),
    "unknown cleaning mode": case(
        _set("automatedCleaningMode", "sometimes"), ManifestError, "automatedCleaningMode", "metadata"
    ),
    "no BareMetalHost in the file": case(lambda d: [d[0]], ManifestError, "holds no BareMetalHost"),
}


@pytest.mark.parametrize(("edit", "error", "fragments"), SPEC_CASES.values(), ids=SPEC_CASES.keys())
def test_bad_hostfile_is_rejected_before_anything_is_stored(
    tmp_path: Path, edit: Callable[[Docs], Docs | None], error: type[Exception], fragments: tuple[str, ...]
) -> None:
    docs: Docs = [copy.deepcopy(SECRET), copy.deepcopy(HOST)]
    docs = edit(docs) or docs
    hostfile = tmp_path / "hosts.yaml"
    hostfile.write_text(yaml.safe_dump_all(docs))
    secrets = tmp_path / "secrets"
    with pytest.raises(error) as err:
        load_hosts(hostfile, secrets, check=check_spec)
    for fragment in fragments:
        assert fragment in str(err.value), f"{fragment!r} not in: {err.value}"
    assert not secrets.exists() or not any(secrets.rglob("*")), "a rejected hostfile stored a secret"
    assert_no_secret_in(str(err.value), [SECRET["stringData"]["password"], URL_PASSWORD], "the error")


def test_the_cli_rejects_a_bad_hostfile_without_contacting_temporal(tmp_path: Path) -> None:
    """`metalflow provision` exits 2 with the message; the (unreachable) server is never dialled."""
    docs: Docs = [copy.deepcopy(SECRET), copy.deepcopy(HOST)]
    spec_of(docs)["bmc"]["address"] = "gopher://10.0.0.10"
    hostfile = tmp_path / "hosts.yaml"
    hostfile.write_text(yaml.safe_dump_all(docs))
    done = subprocess.run(
        [sys.executable, "-m", "metalflow", "provision", str(hostfile), "--secrets-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"METALFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert "spec.bmc.address" in done.stderr and "gopher" in done.stderr
    assert_no_secret_in(done.stdout + done.stderr, [SECRET["stringData"]["password"]], "the CLI's output")
    assert not (tmp_path / "s").exists()


# ---- runtime: activities against real files, HTTP and the BMC client ----


@pytest.fixture(scope="module")
def raw(www: tuple[Path, str]) -> BuiltImage:
    return build_raw_image(www[0] / "os.img", size_mib=4, label="bad-input")


OLD_OS = b"OLD-OS-STILL-HERE"
BLOCK = 64 << 10


def fingerprint(path: Path) -> str:
    """sha256 of every byte of a sparse file (holes read as zeros) without reading its holes.

    Each non-zero BLOCK-aligned block inside a data extent is hashed once with its offset, so
    the digest depends on the bytes only, not on how the file system laid them out.
    """
    h = hashlib.sha256()
    size, pos = path.stat().st_size, 0
    h.update(size.to_bytes(8, "big"))
    fd = os.open(path, os.O_RDONLY)
    try:
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: nothing but a hole from pos on
                break
            start, end = max(data // BLOCK * BLOCK, pos), os.lseek(fd, data, os.SEEK_HOLE)
            while start < end:
                block = os.pread(fd, BLOCK, start)
                if block.strip(b"\0"):
                    h.update(start.to_bytes(8, "big") + block)
                start += BLOCK
            pos = start
    finally:
        os.close(fd)
    return h.hexdigest()


@dataclass(frozen=True)
class OldDisk:
    path: Path
    before: str  # fingerprint() when the test began


def agent_with_old_os(tmp_path: Path, size: int = 8 * GIB) -> tuple[AgentActivities, OldDisk]:
    """One sparse disk that already holds an OS at both ends (where a metadata wipe zeroes):
    a failed write must leave every byte of it as it was."""
    disk = tmp_path / "disk0.img"
    with disk.open("wb") as f:
        f.truncate(size)
        f.write(OLD_OS)
        f.seek(size - len(OLD_OS))
        f.write(OLD_OS)
    a = AgentActivities(
        AgentConfig(
            host_id="default.h0",
            disks=[FileDisk(name="/dev/sda", path=disk, size_bytes=size, serial="SER0", hctl="0:0:0:0")],
        )
    )
    return a, OldDisk(disk, fingerprint(disk))


def untouched(disk: OldDisk) -> bool:
    return fingerprint(disk.path) == disk.before


def fails(fn: Any, *args: Any, secrets: Sequence[str] = ()) -> ApplicationError:
    """The activity's typed, non-retryable error; none of `secrets` in the failure it records."""
    with pytest.raises(ApplicationError) as err:
        ActivityEnvironment().run(fn, *args)
    assert err.value.non_retryable, f"{err.value.type} must not be retried: {err.value.message}"
    assert scan_message(failure_of(err.value), secrets) == [], "a secret in the recorded failure"
    return err.value


def bmc_target(tmp_path: Path, data: dict[str, str] | None, raw_text: str | None = None) -> BMCTarget:
    path = tmp_path / "bmc.yaml"
    if data is not None:
        write_secret(path, data)
    if raw_text is not None:
        path.write_text(raw_text)
    return BMCTarget(
        address=f"redfish+http://127.0.0.1:{free_port()}/redfish/v1/Systems/1",
        credentials=SecretRef(name="bmc", path=str(path)),
    )


def test_missing_credentials_secret_is_reported_before_the_bmc_is_contacted(tmp_path: Path) -> None:
    err = fails(bmc.validate, bmc_target(tmp_path, None))
    assert err.type == "SecretNotFound" and "bmc.yaml" in err.message and "create it" in err.message


def test_empty_password_in_the_credentials_secret(tmp_path: Path) -> None:
    err = fails(bmc.validate, bmc_target(tmp_path, {"username": "admin", "password": ""}))
    assert err.type == "SecretInvalid" and "no non-empty key 'password'" in err.message


def test_credentials_secret_that_is_not_yaml(tmp_path: Path) -> None:
    text = "username: admin\npassword: [hunter2-unclosed\n"
    err = fails(bmc.validate, bmc_target(tmp_path, None, raw_text=text), secrets=[text])
    assert err.type == "SecretInvalid" and "not YAML/JSON" in err.message and "key: value" in err.message


def test_checksum_url_404_leaves_the_disk_as_it_was(tmp_path: Path, www: tuple[Path, str]) -> None:
    a, disk = agent_with_old_os(tmp_path)
    spec = ImageSpec(
        url=f"{www[1]}/os.img", checksum=f"{www[1]}/nope.sha256", checksum_type=ChecksumType.SHA256
    )
    err = write_fails(a, spec)
    assert err.type == "ImageUnavailable" and "404" in err.message and "checksum" in err.message
    assert untouched(disk)


def test_image_url_404_leaves_the_disk_as_it_was(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage
) -> None:
    a, disk = agent_with_old_os(tmp_path)
    spec = ImageSpec(url=f"{www[1]}/missing.img", checksum=raw.sha256, checksum_type=ChecksumType.SHA256)
    err = write_fails(a, spec)
    assert err.type == "ImageUnavailable" and "fix spec.image (url)" in err.message
    assert untouched(disk)


def test_no_disk_matches_the_root_device_hints_and_none_is_touched(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage
) -> None:
    a, disk = agent_with_old_os(tmp_path)
    spec = ImageSpec(url=f"{www[1]}/os.img", checksum=raw.sha256, checksum_type=ChecksumType.SHA256)
    err = fails(
        a.write_image, WriteImageRequest(image=spec, root_device_hints=RootDeviceHints(serial_number="X9"))
    )
    assert err.type == "NoRootDeviceMatch" and "'serialNumber': 'X9'" in err.message and "SER0" in err.message
    assert untouched(disk)


def test_live_iso_is_not_written_to_disk(tmp_path: Path, www: tuple[Path, str]) -> None:
    a, disk = agent_with_old_os(tmp_path)
    err = fails(
        a.write_image, WriteImageRequest(image=ImageSpec(url=f"{www[1]}/x.iso", format=ImageFormat.LIVE_ISO))
    )
    assert err.type == "ImageFormatError" and "virtual media" in err.message
    assert untouched(disk)


def sha256_image(url: str, checksum: str, **more: Any) -> ImageSpec:
    return ImageSpec(url=url, checksum=checksum, checksum_type=ChecksumType.SHA256, **more)


def write_fails(a: AgentActivities, spec: ImageSpec) -> ApplicationError:
    """Write onto /dev/sda by name: without hints a disk under 4 GiB is never chosen."""
    hints = RootDeviceHints(device_name="sda")
    return fails(a.write_image, WriteImageRequest(image=spec, root_device_hints=hints))


def test_image_larger_than_the_disk(tmp_path: Path, www: tuple[Path, str], raw: BuiltImage) -> None:
    """Content-Length says it before a byte is written."""
    a, disk = agent_with_old_os(tmp_path, size=2 << 20)
    spec = sha256_image(f"{www[1]}/os.img", raw.sha256)
    err = write_fails(a, spec)
    assert err.type == "ImageTooLarge"
    assert f"{raw.size} bytes" in err.message and "/dev/sda (2097152 bytes)" in err.message
    assert untouched(disk)


def test_image_without_content_length_stops_at_the_end_of_the_disk(
    tmp_path: Path, www: tuple[Path, str]
) -> None:
    """No Content-Length: the size shows only while streaming. The write stops before the first
    byte past the device's end (the file disk does not grow) and the device is wiped."""
    big = build_raw_image(www[0] / "big.img", size_mib=24, label="too-big")
    size = 12 << 20  # more than the first chunk (read before the wipe), less than the image
    a, disk = agent_with_old_os(tmp_path, size=size)
    err = write_fails(a, sha256_image(f"{www[1]}{NO_LENGTH}big.img", big.sha256))
    assert err.type == "ImageTooLarge" and f"/dev/sda ({size} bytes)" in err.message
    assert "no Content-Length" in err.message and "wiped" in err.message
    assert disk.path.stat().st_size == size, "nothing may be written past the end of the device"
    with disk.path.open("rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20), "a partly written image must not stay bootable"


def test_declared_qcow2_that_is_raw_is_a_format_error_not_a_retry(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage
) -> None:
    a, disk = agent_with_old_os(tmp_path)
    spec = sha256_image(f"{www[1]}/os.img", raw.sha256, format=ImageFormat.QCOW2)
    err = write_fails(a, spec)
    assert err.type == "ImageFormatError"
    assert "declared qcow2" in err.message and "raw" in err.message and "spec.image.format" in err.message
    assert untouched(disk)


@needs_qemu_img
def test_declared_raw_that_is_qcow2_is_not_written_as_raw_bytes(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage
) -> None:
    q = convert_to_qcow2(raw, www[0] / "os.qcow2")
    a, disk = agent_with_old_os(tmp_path)
    spec = sha256_image(f"{www[1]}/os.qcow2", q.sha256, format=ImageFormat.RAW)
    err = write_fails(a, spec)
    assert err.type == "ImageFormatError"
    assert "declared raw" in err.message and "qcow2" in err.message and "spec.image.format" in err.message
    assert untouched(disk)


@needs_qemu_img
def test_qcow2_larger_than_the_disk(tmp_path: Path, www: tuple[Path, str], raw: BuiltImage) -> None:
    """The qcow2 header's virtual size says it from the first chunk, before the download."""
    q = convert_to_qcow2(raw, www[0] / "os.qcow2")
    a, disk = agent_with_old_os(tmp_path, size=2 << 20)
    err = write_fails(a, sha256_image(f"{www[1]}/os.qcow2", q.sha256))
    assert err.type == "ImageTooLarge" and "virtual size" in err.message
    assert f"{raw.size} bytes" in err.message and "/dev/sda (2097152 bytes)" in err.message
    assert untouched(disk)


@needs_qemu_img
@pytest.mark.parametrize(
    ("options", "named"),
    [(["-b", "{raw}", "-F", "raw"], "backing file"), (["-o", "data_file={raw}.data"], "external data file")],
    ids=["backing file", "external data file"],
)
def test_qcow2_that_reads_another_file_is_refused(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage, options: list[str], named: str
) -> None:
    """qemu-img would copy that file from the agent's own file system onto the disk."""
    over = www[0] / "overlay.qcow2"
    args = [o.format(raw=raw.path) for o in options]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *args, str(over), "4M"], check=True)
    a, disk = agent_with_old_os(tmp_path)
    err = write_fails(a, sha256_image(f"{www[1]}/overlay.qcow2", sha256_of(over)))
    assert err.type == "ImageFormatError" and named in err.message and "self-contained" in err.message
    assert untouched(disk)


@needs_qemu_img
def test_qcow2_checksum_mismatch_is_found_before_the_disk_is_touched(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage
) -> None:
    """qcow2 is downloaded and verified before the device is wiped (raw is verified after)."""
    convert_to_qcow2(raw, www[0] / "os.qcow2")
    a, disk = agent_with_old_os(tmp_path)
    err = write_fails(a, sha256_image(f"{www[1]}/os.qcow2", "0" * 64))
    assert err.type == "ImageChecksumMismatch" and "/dev/sda was not touched" in err.message
    assert untouched(disk)


@needs_qemu_img
def test_qcow2_that_cannot_fit_in_the_ramdisk_is_refused_before_the_download(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """qcow2 is spooled whole in the ramdisk's RAM before conversion: its Content-Length against
    the room left says up front that it cannot fit (a server with too little RAM)."""
    q = convert_to_qcow2(raw, www[0] / "os.qcow2")
    a, disk = agent_with_old_os(tmp_path)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr("activities.agent.image.shutil.disk_usage", lambda p: usage._replace(free=q.size - 1))
    err = write_fails(a, sha256_image(f"{www[1]}/os.qcow2", q.sha256))
    assert err.type == "ImageDoesNotFitInRamdisk" and err.non_retryable
    assert "Content-Length is larger" in err.message and "Serve a raw image" in err.message
    assert "The disk was not touched" in err.message
    assert untouched(disk)


@needs_qemu_img
def test_qcow2_without_content_length_that_fills_the_ramdisk_is_a_typed_error(
    tmp_path: Path, www: tuple[Path, str], raw: BuiltImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Content-Length: the spool (here a real 256 KiB tmpfs) fills mid-download; ENOSPC becomes
    a typed error naming the way out, and the disk is untouched (as in a 1 GiB VM's ramdisk)."""
    q = convert_to_qcow2(raw, www[0] / "os.qcow2")
    spool = tmp_path / "spool"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(spool)], check=True)
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(spool))
        a, disk = agent_with_old_os(tmp_path)
        err = write_fails(a, sha256_image(f"{www[1]}{NO_LENGTH}os.qcow2", q.sha256))
    finally:
        subprocess.run(["umount", str(spool)], check=True)
    assert err.type == "ImageDoesNotFitInRamdisk" and "ran out of room mid-download" in err.message
    assert untouched(disk)


def test_unknown_cleaning_mode_reaching_the_agent(tmp_path: Path) -> None:
    a, disk = agent_with_old_os(tmp_path)
    err = fails(a.clean, CleanRequest(mode="shred"))
    assert err.type == "InvalidSpec" and "'shred'" in err.message
    assert untouched(disk)


@pytest.mark.parametrize(
    ("content", "kind", "message"),
    [(None, "SecretNotFound", "does not exist"), ({"other": "x"}, "SecretInvalid", "neither key 'userData'")],
    ids=["userData secret missing", "userData key missing"],
)
def test_bad_user_data_secret_stages_no_config_drive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: dict[str, str] | None, kind: str, message: str
) -> None:
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(tmp_path / "boot"))
    path = tmp_path / "ud.yaml"
    if content is not None:
        write_secret(path, content)
    req = ConfigDriveRequest(host=HostRef(name="h0"), user_data=SecretRef(name="ud", path=str(path)))
    err = fails(stage_configdrive, req, secrets=list((content or {}).values()))
    assert err.type == kind and message in err.message and "ud" in err.message
    assert not list((tmp_path / "boot").rglob("*.iso")), "nothing may be staged for a bad secret"


@pytest.mark.parametrize("key", ["networkData", "metaData", "value"])
def test_malformed_yaml_in_a_secret_names_key_and_line_never_the_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(tmp_path / "boot"))
    path, text = tmp_path / "nd.yaml", malformed_yaml()
    write_secret(path, {key: text})
    field = "meta_data" if key == "metaData" else "network_data"
    req = ConfigDriveRequest(host=HostRef(name="h0"), **{field: SecretRef(name="nd", path=str(path))})
    err = fails(stage_configdrive, req, secrets=[text])
    assert err.type == "SecretMalformedYAML"
    assert f"key {key!r} of file {path}" in err.message and "line 7" in err.message
    assert err.__cause__ is None and err.__suppress_context__, "PyYAML's error must not be chained"
    assert not list((tmp_path / "boot").rglob("*.iso")), "nothing may be staged for a bad secret"


def test_malformed_user_data_merged_with_the_kubeadm_join_is_typed_and_quotes_no_line() -> None:
    text = malformed_yaml()
    join = JoinSpec(kubeconfig=SecretRef(name="target"))
    with pytest.raises(ApplicationError) as err:
        render_user_data(
            HostRef(name="h0"),
            join,
            "https://h:6443",
            "t",
            "sha256:ff",
            text,
            "",
            "key 'userData' of Secret ns/ud",
        )
    assert err.value.type == "SecretMalformedYAML" and err.value.non_retryable
    assert "key 'userData' of Secret ns/ud" in err.value.message and "line 7" in err.value.message
    assert scan_message(failure_of(err.value), [text]) == []
