"""The base deploy ISO: the deploy ramdisk's kernel and initrd on a CD bootable by BIOS and UEFI.

BIOS: isolinux (Debian's `isolinux`, `syslinux-common`), with an isohybrid MBR so the image also
boots from a USB stick. UEFI: an El Torito EFI image, a small FAT holding \\EFI\\BOOT\\BOOTX64.EFI
made by `grub-mkstandalone` (Debian's `grub-efi-amd64-bin`) whose embedded configuration finds
the ISO by a marker file and reads /boot/grub/grub.cfg from it. Both loaders' configuration
files live on the ISO's own file system, so a host's ISO is this one with those files replaced
(activities/boot/vmedia.py re-masters it per host with xorriso, Debian's `xorriso`).

The base's command line carries no host identity: booted as it is, the ramdisk says so and stops.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from activities.boot.vmedia import MEDIUM_ARG, boot_configs

VOLUME_ID = "METALFLOW_DEPLOY"
MARKER = "/metalflow/deploy-iso"  # GRUB finds the ISO's file system by this file
ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
ISOHYBRID_MBR = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
GRUB_EFI_MODULES = Path("/usr/lib/grub/x86_64-efi")
# What the standalone GRUB needs: find the ISO, read its config, boot Linux.
GRUB_MODULES = (
    "part_gpt part_msdos iso9660 fat search search_fs_file configfile normal linux echo test all_video"
)
EMBEDDED_GRUB_CFG = f"""search --no-floppy --set=root --file {MARKER}
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
"""
# Debian package -> a file it installs
PACKAGES = {
    "xorriso": Path("/usr/bin/xorriso"),
    "isolinux": ISOLINUX_BIN,
    "syslinux-common": LDLINUX,
    "grub-efi-amd64-bin": GRUB_EFI_MODULES / "linux.mod",
    "grub-common": Path("/usr/bin/grub-mkstandalone"),
    "mtools": Path("/usr/bin/mcopy"),
    "dosfstools": Path("/usr/sbin/mkfs.vfat"),
}


class DeployISOError(RuntimeError):
    pass


def missing_packages() -> list[str]:
    return [pkg for pkg, path in PACKAGES.items() if not path.exists()]


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise DeployISOError(f"{what} failed ({argv[0]}): {done.stderr.strip()[-1500:]}")


def efi_boot_image(out: Path) -> None:
    """A FAT image holding \\EFI\\BOOT\\BOOTX64.EFI (standalone GRUB with its config embedded)."""
    with tempfile.TemporaryDirectory(prefix="metalflow-efi-") as tmp:
        cfg = Path(tmp) / "grub.cfg"
        cfg.write_text(EMBEDDED_GRUB_CFG)
        efi = Path(tmp) / "BOOTX64.EFI"
        _run(
            [
                "grub-mkstandalone", "-O", "x86_64-efi", "-o", str(efi),
                f"--modules={GRUB_MODULES}", f"--install-modules={GRUB_MODULES}",
                "--locales=", "--fonts=", "--themes=", f"boot/grub/grub.cfg={cfg}",
            ],
            "grub-mkstandalone",
        )  # fmt: skip
        size_kib = (efi.stat().st_size // 1024) + 512
        out.unlink(missing_ok=True)
        _run(["mkfs.vfat", "-C", "-n", "MFDEPLOYEFI", str(out), str(size_kib)], "mkfs.vfat")
        _run(["mmd", "-i", str(out), "::/EFI", "::/EFI/BOOT"], "mmd")
        _run(["mcopy", "-i", str(out), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], "mcopy")


def build_base_iso(vmlinuz: Path, initrd: Path, out: Path, kernel_args: str) -> Path:
    """`out` (written atomically): vmlinuz + initrd bootable from CD by BIOS and UEFI."""
    missing = missing_packages()
    if missing:
        raise DeployISOError(
            f"the deploy ISO needs Debian packages {' '.join(missing)} (scripts/system-deps.sh)"
        )
    with tempfile.TemporaryDirectory(prefix="metalflow-iso-") as tmp:
        root = Path(tmp) / "root"
        for sub in ("isolinux", "boot/grub", "metalflow"):
            (root / sub).mkdir(parents=True)
        shutil.copyfile(vmlinuz, root / "boot" / "vmlinuz")
        shutil.copyfile(initrd, root / "boot" / "initrd.img")
        shutil.copyfile(ISOLINUX_BIN, root / "isolinux" / "isolinux.bin")
        shutil.copyfile(LDLINUX, root / "isolinux" / "ldlinux.c32")
        (root / MARKER.lstrip("/")).write_text("metalflow deploy ISO\n")
        args = " ".join(a for a in (kernel_args, MEDIUM_ARG) if a)
        for path, text in boot_configs(args, "base ISO (no host configuration)").items():
            (root / path.lstrip("/")).write_text(text)
        efi_boot_image(root / "boot" / "efiboot.img")
        tmp_out = out.with_name(f".{out.name}.tmp")
        _run(
            [
                "xorriso", "-no_rc", "-as", "mkisofs", "-o", str(tmp_out), "-V", VOLUME_ID, "-J", "-R",
                "-isohybrid-mbr", str(ISOHYBRID_MBR),
                "-c", "isolinux/boot.cat",
                "-b", "isolinux/isolinux.bin", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
                "-eltorito-alt-boot", "-e", "boot/efiboot.img", "-no-emul-boot", "-isohybrid-gpt-basdat",
                str(root),
            ],
            "xorriso",
        )  # fmt: skip
        tmp_out.replace(out)
    return out
