"""A raw disk image that really boots, for the QEMU test bed to write and then boot.

GPT with one EFI System Partition (FAT): BIOS boots it through syslinux (gptmbr.bin in the MBR,
syslinux in the partition's boot sector), UEFI through \\EFI\\BOOT\\BOOTX64.EFI (a standalone
GRUB). Both start a kernel and a busybox initramfs whose /init prints a marker on the serial
console: seeing the marker proves the VM booted the disk the agent wrote. Built without loop
devices (sfdisk, syslinux and mtools work on files), so it needs no privileges.
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


# The image's layout: GPT, one EFI System Partition from 1 MiB to the end (less GPT's backup).
ESP_START_SECTOR = 2048
SECTOR = 512
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GPTMBR = Path("/usr/lib/syslinux/mbr/gptmbr.bin")
BOOT_ARGS = "console=ttyS0,115200n8 quiet"
# GRUB's configuration, embedded in BOOTX64.EFI (grub-mkstandalone's memdisk): it finds the ESP by
# the kernel it holds, so it does not depend on how the firmware numbers the disks.
GRUB_CFG = f"""set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --file --set=root /vmlinuz
linux /vmlinuz {BOOT_ARGS}
initrd /initrd.img
boot
"""
GRUB_MODULES = "part_gpt fat search search_fs_file linux normal serial terminal echo test"


def esp_offset() -> int:
    """Byte offset of the ESP: what the agent leaves untouched when it adds the config drive."""
    return ESP_START_SECTOR * SECTOR


def _grub_efi(out: Path, cfg: Path) -> None:
    """\\EFI\\BOOT\\BOOTX64.EFI: a standalone GRUB (Debian's grub-efi-amd64-bin) with GRUB_CFG."""
    subprocess.run(
        [
            "grub-mkstandalone",
            "--format=x86_64-efi",
            f"--output={out}",
            f"--install-modules={GRUB_MODULES}",
            f"--modules={GRUB_MODULES}",
            "--locales=",
            "--fonts=",
            "--themes=",
            f"boot/grub/grub.cfg={cfg}",
        ],
        check=True,
        capture_output=True,
    )


def build_marker_image(path: Path, kernel: Path, marker: str, size_mib: int = 48) -> BuiltImage:
    """A raw disk that really boots under BIOS and UEFI: GPT (sfdisk) with one EFI System
    Partition, marked legacy-BIOS-bootable; syslinux's gptmbr.bin in the MBR chains syslinux in
    the ESP's boot sector (BIOS), and \\EFI\\BOOT\\BOOTX64.EFI is a standalone GRUB (UEFI). Both
    start the Debian kernel with an initramfs whose /init prints `marker` on the serial console.
    Built without loop devices (sfdisk, syslinux and mtools work on files), so no privileges."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    total = size_mib * 1024 * 1024
    esp_sectors = total // SECTOR - ESP_START_SECTOR - 34  # GPT's backup: 33 sectors at the end
    esp_sectors -= esp_sectors % 8
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
            f"  INITRD /initrd.img\n  APPEND {BOOT_ARGS}\n"
        )
        (t / "grub.cfg").write_text(GRUB_CFG)
        _grub_efi(t / "BOOTX64.EFI", t / "grub.cfg")
        shutil.copy(kernel, t / "vmlinuz")
        with path.open("wb") as new:
            os.truncate(new.fileno(), total)
        table = (
            "label: gpt\n"
            f'start={ESP_START_SECTOR}, size={esp_sectors}, type={ESP_TYPE}, name="ESP", '
            'attrs="LegacyBIOSBootable"\n'
        )
        subprocess.run(
            ["sfdisk", "--quiet", str(path)], input=table, text=True, check=True, capture_output=True
        )
        with path.open("r+b") as mbr:  # the MBR's boot code only: sfdisk's protective table stays
            mbr.write(GPTMBR.read_bytes()[:440])
        esp = t / "esp.img"
        subprocess.run(
            [
                "mkfs.fat",
                "-h",
                str(ESP_START_SECTOR),
                "-C",
                "-n",
                "MFIMAGE",
                str(esp),
                str(esp_sectors * SECTOR // 1024),
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(["syslinux", "--install", str(esp)], check=True, capture_output=True)
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

        def mtools(*argv: str) -> None:
            subprocess.run(list(argv), check=True, capture_output=True, env=env)

        for d in ("::EFI", "::EFI/BOOT"):
            mtools("mmd", "-i", str(esp), d)
        mtools("mcopy", "-i", str(esp), str(t / "BOOTX64.EFI"), "::EFI/BOOT/BOOTX64.EFI")
        for name in ("vmlinuz", "initrd.img", "syslinux.cfg"):
            mtools("mcopy", "-i", str(esp), str(t / name), f"::{name}")
        with esp.open("rb") as src, path.open("r+b") as dst:
            dst.seek(esp_offset())
            shutil.copyfileobj(src, dst, 4 << 20)
    return BuiltImage(path, sha256_of(path), path.stat().st_size)
