"""The deploy ramdisk: built from Debian packages, and its /init understands our iPXE script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from activities.boot import agent_tokens, ipxe
from metalflow.api.boot import BootPurpose
from metalflow.api.models import HostRef
from metalflow.runtime.settings import Settings

REPO = Path(__file__).parent.parent


@pytest.mark.skipif(not (shutil.which("cpio") and shutil.which("busybox")), reason="cpio and busybox needed")
def test_test_ramdisk_builds_and_its_init_parses_the_ipxe_kernel_args(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(REPO / "ramdisk" / "build.sh"), "--test", str(tmp_path / "out")],
        check=True,
        capture_output=True,
    )
    unpacked = tmp_path / "root"
    unpacked.mkdir()
    listing = subprocess.run(
        f"zcat {tmp_path / 'out' / 'initrd.img'} | cpio -idm --quiet && find . -type f -o -type l",
        shell=True,
        cwd=unpacked,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert {"./init", "./lib/metalflow/cmdline.sh", "./bin/sh", "./bin/udhcpc"} <= set(listing)

    settings = Settings(
        boot_server_url="http://192.0.2.1:8088",
        agent_temporal_address="192.0.2.1:7233",
        temporal_namespace="metal",
    )
    script = ipxe.script(
        HostRef(namespace="metal3", name="worker-0"), "52:54:00:12:34:56", BootPurpose.DEPLOY, settings
    )
    kernel_line = next(line for line in script.splitlines() if line.startswith("kernel "))
    cmdline = kernel_line.split(" ", 2)[2].split(" || ")[0]
    parsed = subprocess.run(
        [
            "busybox",
            "sh",
            "-c",
            '. ./lib/metalflow/cmdline.sh && parse_cmdline "$1" && '
            'echo "$MF_HOST_ID|$MF_TEMPORAL|$MF_NAMESPACE|$MF_TLS|$MF_TASK_QUEUE|$MF_BOOT_MAC"',
            "sh",
            cmdline,
        ],
        cwd=unpacked,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert parsed == "metal3.worker-0|192.0.2.1:7233|metal|0|host-metal3.worker-0|52:54:00:12:34:56"
    # the boot server fills in the boot's agent token (activities/boot/agent_tokens.py)
    served = cmdline.replace(agent_tokens.PLACEHOLDER, "tok-EN_0123456789")
    parsed = subprocess.run(
        [
            "busybox",
            "sh",
            "-c",
            '. ./lib/metalflow/cmdline.sh && parse_cmdline "$1" && echo "$MF_TOKEN|$MF_BOOT_SERVER"',
            "sh",
            served,
        ],
        cwd=unpacked,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert parsed == "tok-EN_0123456789|http://192.0.2.1:8088"
    # with TLS: the CA's URL and the server name reach the init's variables
    tls_settings = settings.model_copy(
        update={
            "agent_temporal_tls": True,
            "agent_temporal_tls_ca_url": "http://192.0.2.1:8088/ca.pem",
            "agent_temporal_tls_server_name": "temporal.metal.example",
        }
    )
    script = ipxe.script(
        HostRef(namespace="metal3", name="worker-0"), "52:54:00:12:34:56", BootPurpose.DEPLOY, tls_settings
    )
    kernel_line = next(line for line in script.splitlines() if line.startswith("kernel "))
    parsed = subprocess.run(
        [
            "busybox",
            "sh",
            "-c",
            '. ./lib/metalflow/cmdline.sh && parse_cmdline "$1" && '
            'echo "$MF_TLS|$MF_TLS_CA|$MF_TLS_SERVER_NAME"',
            "sh",
            kernel_line.split(" ", 2)[2].split(" || ")[0],
        ],
        cwd=unpacked,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert parsed == "1|http://192.0.2.1:8088/ca.pem|temporal.metal.example"
    missing = subprocess.run(
        ["busybox", "sh", "-c", '. ./lib/metalflow/cmdline.sh && parse_cmdline "quiet"'],
        cwd=unpacked,
        capture_output=True,
    )
    assert missing.returncode != 0, "no agent settings: init must not start an agent"


def test_old_ramdisk_builds_are_pruned_newest_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit is a new ramdisk key (the checkout's wheel): only the newest few stay cached,
    and a build in progress (a dot directory) is never touched."""
    import os

    from testbed.ramdisk import prune_cache

    monkeypatch.setenv("METALFLOW_CACHE", str(tmp_path))
    for age, key in enumerate(("newest", "middle", "oldest", "ancient")):
        (tmp_path / "ramdisk" / key).mkdir(parents=True)
        os.utime(tmp_path / "ramdisk" / key, (1_700_000_000 - age * 60, 1_700_000_000 - age * 60))
    (tmp_path / "ramdisk" / ".building.x").mkdir()
    prune_cache("ramdisk", keep=2)
    assert sorted(p.name for p in (tmp_path / "ramdisk").iterdir()) == [".building.x", "middle", "newest"]
