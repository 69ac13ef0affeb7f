"""A real OS image for the e2e: Debian bookworm with GRUB for BIOS and UEFI, Debian's kernel and
cloud-init reading only a ConfigDrive, on a serial console.

    python -m testbed.os_image            # build (cached), print the paths, sizes and build time

The Debian root comes from the shared builder (testbed/debian_image.py, mmdebstrap, cached); this
module lays it into a disk image without loop devices or partition scanning (TESTBED-NOTES):

- GPT (sfdisk on the file): 1 = BIOS boot partition (GRUB's core.img), 2 = ESP (FAT, written with
  mtools, `/EFI/BOOT/BOOTX64.EFI`: the removable-media path, so no NVRAM entry is needed),
  3 = root (ext4 made by `mke2fs -d` in its own file, copied in at the partition's offset);
- GRUB images come from the image's own GRUB (`grub-mkimage` run chrooted in the root): for BIOS,
  boot.img goes into the MBR's code area and core.img into partition 1 with the two block
  addresses GRUB's setup would write (boot.img's kernel sector; the first-sector blocklist of
  core.img); for UEFI, a standalone GRUB EFI binary. Both find the root by its file-system UUID and
  read `/boot/grub/grub.cfg` from it (modules copied to /boot/grub/<platform>, as grub-install does);
- cloud-init: `datasource_list: [ConfigDrive]` (nothing else is probed); its netplan renderer
  writes the networkData (addresses, routes, DNS, bonds, VLANs) for netplan, which generates
  systemd-networkd files, as on Ubuntu's cloud images (cloud-init 22.4's own networkd renderer
  drops bonds and VLANs; ifupdown's needs net-tools' `route` for routes and resolvconf for DNS,
  and drops both silently without them); the kernel and GRUB talk on ttyS0 at 115200.

Cached as `${METALFLOW_CACHE}/os-image/<key>` (`disk.raw`, `disk.qcow2`, `manifest.json` with
both sha256s, the Debian packages and the layout), keyed by the Debian root's key and this file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from testbed.cache import ensure_artefact
from testbed.debian_image import DebianImage, ImageBuildError, _run, debian_rootfs, sha256_file

MIB = 1 << 20
SECTOR = 512
# The partitions, in MiB: 1 MiB alignment, BIOS boot 1 MiB at 1 MiB, ESP 64 MiB after it.
BIOS_BOOT_START, BIOS_BOOT_SIZE = 1, 1
ESP_START, ESP_SIZE = 2, 64
ROOT_START = ESP_START + ESP_SIZE
# GPT's backup table takes the last 33 sectors; leave the last MiB free.
TAIL = 1
# Partition type GUIDs (UEFI spec; GRUB's BIOS boot partition).
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "kmod",
    "cloud-init",
    "cloud-guest-utils",  # growpart: cloud-init grows the root partition up to the config drive
    "netplan.io",
    "iproute2",
    "iputils-ping",
    "netbase",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "grub-common",
    "mdadm",  # its initramfs hook assembles a software RAID root (spec.raid.softwareRAIDVolumes)
)
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*")
CLOUD_CFG = """\
# The metalflow OS image: the config drive the agent writes is the only source of
# userData, metaData and networkData.
datasource_list: [ConfigDrive]
system_info:
  network:
    renderers: [netplan]
"""
# Run by mmdebstrap after the install ($1 = the root): cloud-init's datasource and renderer,
# systemd-networkd enabled (it applies what netplan generates), apt's caches gone.
HOOKS = (
    "mkdir -p \"$1\"/etc/cloud/cloud.cfg.d && printf '%s' '"
    + CLOUD_CFG
    + '\' > "$1"/etc/cloud/cloud.cfg.d/90-metalflow.cfg',
    'chroot "$1" systemctl enable systemd-networkd.service',
    # network-online waits for one configured link, 30 s at most (not all of them, with no limit):
    # a host whose networkData names no NIC, or whose cable is out, still boots in time
    'mkdir -p "$1"/etc/systemd/system/systemd-networkd-wait-online.service.d && '
    "printf '%s\\n' '[Service]' 'ExecStart=' "
    "'ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30' "
    '> "$1"/etc/systemd/system/systemd-networkd-wait-online.service.d/10-metalflow.conf',
    'rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*',
)
BIOS_MODULES = ("biosdisk", "part_gpt", "part_msdos", "ext2", "search_fs_uuid")
# mdraid1x: GRUB reads a root on an md RAID (mdadm's default 1.2 metadata), as on a software RAID host
EFI_MODULES = ("part_gpt", "part_msdos", "ext2", "fat", "search_fs_uuid", "mdraid1x")


@dataclass(frozen=True)
class Added:
    """A file put into the image's root on top of the Debian packages: text, a copy of a file
    (a binary built here), or a symlink (a systemd unit enabled)."""

    path: str  # in the root, without the leading /
    text: str | None = None
    source: Path | None = None
    link: str | None = None
    mode: int = 0o644

    def digest(self) -> str:
        h = hashlib.sha256(f"{self.path}\0{self.mode:o}\0{self.link}\0{self.text}".encode())
        if self.source is not None:
            h.update(sha256_file(self.source).encode())
        return h.hexdigest()


@dataclass(frozen=True)
class Recipe:
    """One bootable image: the Debian root it is laid from and the files added on top; cached
    under `<cache_name>/<key>`. The node image (testbed/node_image.py) is another value."""

    cache_name: str
    debian: DebianImage
    added: tuple[Added, ...] = ()


OS = Recipe(
    "os-image", DebianImage(name="os-image", packages=PACKAGES, hooks=HOOKS, dpkg_excludes=DPKG_EXCLUDES)
)


def debian() -> DebianImage:
    return OS.debian


def key(recipe: Recipe = OS) -> str:
    h = hashlib.sha256(recipe.debian.debian_key().encode())
    h.update(Path(__file__).read_bytes())
    for added in recipe.added:
        h.update(added.digest().encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class OSImage:
    """The built image: raw and qcow2 with their sha256, and where its partitions are."""

    dir: Path
    raw: Path
    raw_sha256: str
    qcow2: Path
    qcow2_sha256: str
    root_uuid: str
    kernel_version: str
    manifest: dict[str, object]


def _uuids(image_key: str) -> tuple[str, str]:
    """The root file system's UUID and the disk's GPT GUID: fixed by the key (a rebuild of the
    same inputs boots with the same grub.cfg)."""
    ns = uuid.UUID("6d657461-6c66-6c6f-772d-6f732d696d67")
    return str(uuid.uuid5(ns, "root-" + image_key)), str(uuid.uuid5(ns, "disk-" + image_key))


def _kernel(root: Path) -> str:
    versions = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(versions) != 1:
        raise ImageBuildError(f"expected one kernel in the image's /boot, found {versions}")
    version = versions[0]
    if not (root / "boot" / f"initrd.img-{version}").exists():
        raise ImageBuildError(f"the image has no initramfs for kernel {version}")
    return version


def _grub_cfg(root_uuid: str, version: str) -> str:
    cmdline = f"root=UUID={root_uuid} ro console=tty0 console=ttyS0,115200n8"
    return f"""\
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
set default=0
menuentry 'Debian GNU/Linux (metalflow OS image)' {{
  search --no-floppy --fs-uuid --set=root {root_uuid}
  linux /boot/vmlinuz-{version} {cmdline}
  initrd /boot/initrd.img-{version}
}}
"""


def _stage(base: Path, stage: Path, root_uuid: str, version: str, added: tuple[Added, ...] = ()) -> None:
    """STAGE: the cached root as hard links (untouched), with this image's own files written as
    new files (never through a link into the cache)."""
    _run(["cp", "-al", str(base), str(stage)], "linking the Debian root")

    def put(rel: str, text: str) -> None:
        path = stage / rel
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    for a in added:
        path = stage / a.path
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        if a.link is not None:
            path.symlink_to(a.link)
            continue
        if a.source is not None:
            shutil.copyfile(a.source, path)
        else:
            path.write_text(a.text or "")
        path.chmod(a.mode)

    put("etc/fstab", f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n")
    put("boot/grub/grub.cfg", _grub_cfg(root_uuid, version))
    put("etc/hostname", "localhost\n")
    for platform in ("i386-pc", "x86_64-efi"):
        dest = stage / "boot" / "grub" / platform
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(stage / "usr" / "lib" / "grub" / platform, dest)


def _grub_images(stage: Path, root_uuid: str, out: Path) -> tuple[Path, Path, Path]:
    """(boot.img, core.img, BOOTX64.EFI) made by the image's own grub-mkimage (chrooted)."""
    early = f"search.fs_uuid {root_uuid} root\nset prefix=($root)/boot/grub\n"
    work = stage / "tmp" / "metalflow-grub"
    work.mkdir(parents=True)
    (work / "early.cfg").write_text(early)
    for fmt, name, modules in (
        ("i386-pc", "core.img", BIOS_MODULES),
        ("x86_64-efi", "BOOTX64.EFI", EFI_MODULES),
    ):
        _run(
            [
                "chroot",
                str(stage),
                "grub-mkimage",
                "-O",
                fmt,
                "-d",
                f"/usr/lib/grub/{fmt}",
                "-c",
                "/tmp/metalflow-grub/early.cfg",
                "-p",
                "/boot/grub",
                "-o",
                f"/tmp/metalflow-grub/{name}",
                *modules,
            ],
            f"grub-mkimage -O {fmt}",
            timeout=300,
        )
        shutil.move(work / name, out / name)
    shutil.copyfile(stage / "usr" / "lib" / "grub" / "i386-pc" / "boot.img", out / "boot.img")
    shutil.rmtree(work)
    return out / "boot.img", out / "core.img", out / "BOOTX64.EFI"


def _install_bios_grub(disk: Path, boot_img: Path, core_img: Path) -> None:
    """What grub-bios-setup does for a GPT disk with a BIOS boot partition, on the file:
    core.img at the partition's first sector, its first sector's blocklist naming the rest; the
    MBR's code area (up to the disk signature; the protective partition table stays) from
    boot.img, told where core.img starts and to use the drive the BIOS booted from."""
    core = bytearray(core_img.read_bytes())
    core_sector = BIOS_BOOT_START * MIB // SECTOR
    sectors = -(-len(core) // SECTOR)
    if sectors * SECTOR > BIOS_BOOT_SIZE * MIB:
        raise ImageBuildError(f"GRUB's core.img ({len(core)} bytes) does not fit the BIOS boot partition")
    # struct grub_pc_bios_boot_blocklist {u64 start; u16 len; u16 segment} at the end of sector 0
    # of core.img (diskboot.img); the rest of core.img loads at segment 0x820.
    list_at = SECTOR - 12
    core[list_at : list_at + 12] = (
        (core_sector + 1).to_bytes(8, "little")
        + (sectors - 1).to_bytes(2, "little")
        + (0x820).to_bytes(2, "little")
    )
    boot = bytearray(boot_img.read_bytes())
    if len(boot) != SECTOR or boot[510:512] != b"\x55\xaa":
        raise ImageBuildError(f"{boot_img} is not GRUB's 512-byte boot.img")
    boot[0x5C:0x64] = core_sector.to_bytes(8, "little")  # kernel sector
    boot[0x64] = 0xFF  # boot drive: the one the BIOS passed in DL
    with disk.open("r+b") as f:
        f.seek(core_sector * SECTOR)
        f.write(core)
        f.seek(0)
        mbr = bytearray(f.read(SECTOR))
        mbr[:0x1B8] = boot[:0x1B8]  # keep the disk signature and the protective MBR's table
        mbr[510:512] = b"\x55\xaa"
        f.seek(0)
        f.write(mbr)


def _esp(path: Path, efi: Path) -> None:
    _run(["mkfs.fat", "-F", "32", "-n", "ESP", "-C", str(path), str(ESP_SIZE * 1024)], "mkfs.fat (ESP)")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    _run(["mmd", "-i", str(path), "::/EFI", "::/EFI/BOOT"], "mmd (ESP)", env=env)
    _run(["mcopy", "-i", str(path), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], "mcopy (ESP)", env=env)


def _copy_in(disk: Path, part: Path, offset: int) -> None:
    """PART's bytes into DISK at OFFSET, holes kept as holes."""
    _run(
        [
            "dd",
            f"if={part}",
            f"of={disk}",
            "bs=4M",
            f"seek={offset}",
            "oflag=seek_bytes",
            "conv=notrunc,sparse",
            "status=none",
        ],
        "dd (partition into the disk image)",
    )


def _du_mib(root: Path) -> int:
    out = _run(["du", "-s", "--block-size=1M", str(root)], "du")
    return int(out.split()[0])


def build(out: Path, recipe: Recipe = OS) -> None:
    started = time.monotonic()
    image = recipe.debian
    base = debian_rootfs(image)
    image_key = key(recipe)
    root_uuid, disk_guid = _uuids(image_key)
    version = _kernel(base / "root")
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        t = Path(tmp)
        stage = t / "root"
        _stage(base / "root", stage, root_uuid, version, recipe.added)
        boot_img, core_img, efi = _grub_images(stage, root_uuid, t)
        # The root file system: what the root holds plus a quarter, at least 256 MiB free.
        used = _du_mib(stage)
        root_mib = used + max(256, used // 4)
        rootfs = t / "root.ext4"
        _run(
            [
                "mke2fs",
                "-q",
                "-t",
                "ext4",
                "-L",
                "root",
                "-U",
                root_uuid,
                "-E",
                "root_owner=0:0",
                "-d",
                str(stage),
                str(rootfs),
                f"{root_mib}M",
            ],
            "mke2fs -d (root)",
            timeout=900,
        )
        esp = t / "esp.fat"
        _esp(esp, efi)
        total_mib = ROOT_START + root_mib + TAIL
        raw = out / "disk.raw"
        with raw.open("wb") as f:
            f.truncate(total_mib * MIB)
        layout = (
            "label: gpt\n"
            f"label-id: {disk_guid}\n"
            "unit: sectors\n"
            f"start={BIOS_BOOT_START * MIB // SECTOR}, size={BIOS_BOOT_SIZE * MIB // SECTOR}, "
            f"type={BIOS_BOOT_TYPE}, name=bios-boot\n"
            f"start={ESP_START * MIB // SECTOR}, size={ESP_SIZE * MIB // SECTOR}, type={ESP_TYPE}, name=esp\n"
            f"start={ROOT_START * MIB // SECTOR}, size={root_mib * MIB // SECTOR}, "
            f"type={LINUX_TYPE}, name=root\n"
        )
        _run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(raw)], "sfdisk (GPT)", input=layout)
        _copy_in(raw, esp, ESP_START * MIB)
        _copy_in(raw, rootfs, ROOT_START * MIB)
        _install_bios_grub(raw, boot_img, core_img)
    qcow2 = out / "disk.qcow2"
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", str(raw), str(qcow2)], "qemu-img convert")
    manifest = {
        "key": image_key,
        "debian_key": image.debian_key(),
        "kernel": version,
        "root_uuid": root_uuid,
        "disk_guid": disk_guid,
        "raw": {"sha256": sha256_file(raw), "bytes": raw.stat().st_size},
        "qcow2": {"sha256": sha256_file(qcow2), "bytes": qcow2.stat().st_size},
        "partitions_mib": {
            "bios_boot": [BIOS_BOOT_START, BIOS_BOOT_SIZE],
            "esp": [ESP_START, ESP_SIZE],
            "root": [ROOT_START, root_mib],
        },
        "debian_packages": json.loads((base / "packages.json").read_text()),
        "added": {a.path: a.digest() for a in recipe.added},
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def os_image(recipe: Recipe = OS) -> OSImage:
    """The cached OS image, built on first use (minutes: mmdebstrap, mke2fs, qcow2)."""
    d = ensure_artefact(recipe.cache_name, key(recipe), lambda out: build(out, recipe))
    m = json.loads((d / "manifest.json").read_text())
    return OSImage(
        dir=d,
        raw=d / "disk.raw",
        raw_sha256=m["raw"]["sha256"],
        qcow2=d / "disk.qcow2",
        qcow2_sha256=m["qcow2"]["sha256"],
        root_uuid=m["root_uuid"],
        kernel_version=m["kernel"],
        manifest=m,
    )


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    started = time.monotonic()
    img = os_image()
    m = img.manifest
    print(f"{img.dir}\n  raw   {m['raw']['bytes'] / MIB:.0f} MiB  sha256 {img.raw_sha256}")  # type: ignore[index]
    print(f"  qcow2 {m['qcow2']['bytes'] / MIB:.0f} MiB  sha256 {img.qcow2_sha256}")  # type: ignore[index]
    print(
        f"  kernel {img.kernel_version}; built in {m['seconds']} s"
        f" (this call {time.monotonic() - started:.1f} s)"
    )


if __name__ == "__main__":
    main()
