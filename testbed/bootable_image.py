"""A raw disk image that really boots, for the QEMU test bed to write and then boot.

FAT with syslinux in its boot sector (BIOS boots it like a USB stick), a kernel, and a busybox
initramfs whose /init prints a marker on the serial console: seeing the marker proves the VM
booted the disk the agent wrote. Built without loop devices (syslinux and mtools work on the
file), so it needs no privileges.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from testbed.images import BuiltImage, sha256_of


def _busybox_initramfs(init: str, out: Path) -> None:
    """A gzip'd newc initramfs: busybox, its libraries, and `init`."""
    with tempfile.TemporaryDirectory() as root:
        busybox = shutil.which("busybox")
        assert busybox is not None
        libs = subprocess.run(["ldd", busybox], capture_output=True, text=True).stdout.split()
        for f in [busybox, *(w for w in libs if w.startswith("/"))]:
            dst = Path(root + f)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
        for d in ("bin", "dev", "proc", "sys"):
            (Path(root) / d).mkdir(exist_ok=True)
        for applet in ("sh", "echo", "sleep", "mount", "cat"):
            (Path(root) / "bin" / applet).symlink_to(busybox)
        (Path(root) / "init").write_text(init)
        (Path(root) / "init").chmod(0o755)
        files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True, check=True).stdout
        cpio = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"],
            cwd=root,
            input=files.encode(),
            capture_output=True,
            check=True,
        ).stdout
        out.write_bytes(gzip.compress(cpio, compresslevel=6))


def build_marker_image(path: Path, kernel: Path, marker: str, size_mib: int = 48) -> BuiltImage:
    """A raw disk that really boots: a FAT file system with syslinux in its boot sector (BIOS
    boots it like a USB stick), the Debian kernel and an initramfs whose /init prints `marker`
    on the serial console. Built without loop devices (syslinux and mtools work on the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        init = (
            "#!/bin/sh\nmount -t proc proc /proc\n"
            f"echo '{marker}: booted from the written disk'\n"
            "while :; do sleep 3600; done\n"
        )
        _busybox_initramfs(init, t / "initrd.img")
        (t / "syslinux.cfg").write_text(
            "SERIAL 0 115200\nDEFAULT image\nPROMPT 0\nTIMEOUT 0\nLABEL image\n  LINUX /vmlinuz\n"
            "  INITRD /initrd.img\n  APPEND console=ttyS0,115200n8 quiet\n"
        )
        shutil.copy(kernel, t / "vmlinuz")
        subprocess.run(
            ["mkfs.fat", "-C", "-n", "MFIMAGE", str(path), str(size_mib * 1024)],
            check=True,
            capture_output=True,
        )
        subprocess.run(["syslinux", "--install", str(path)], check=True, capture_output=True)
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        for name in ("vmlinuz", "initrd.img", "syslinux.cfg"):
            subprocess.run(
                ["mcopy", "-i", str(path), str(t / name), f"::{name}"],
                check=True,
                capture_output=True,
                env=env,
            )
    return BuiltImage(path, sha256_of(path), path.stat().st_size)
