#!/usr/bin/env bash
# What `make e2e` needs beyond `make test`: libvirt + QEMU (the VM that plays the bare-metal
# server), syslinux/mtools (the bootable image the test writes), a Debian kernel (extracted,
# never installed), and the libvirt Python bindings for sushy-emulator and virtualbmc.
# Exits 0 with a message when this machine cannot run the VM test bed (not root, no apt-get):
# the e2e tests then skip themselves and say why.
#   scripts/e2e-deps.sh VENV
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository root: VENV is relative to it
venv=${1:?venv directory}
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "e2e: needs root and apt-get to install libvirt/QEMU; the e2e tests will skip" >&2; exit 0
fi
need=(libvirt-daemon:libvirtd libvirt-daemon-driver-qemu:/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so
      libvirt-clients:virsh libvirt-dev:/usr/include/libvirt/libvirt.h pkg-config:pkg-config gcc:gcc
      qemu-system-x86:qemu-system-x86_64 ipxe-qemu:/usr/lib/ipxe/qemu/pxe-virtio.rom
      syslinux:syslinux syslinux-common:/usr/lib/syslinux/modules/bios/ldlinux.c32 mtools:mcopy
      dosfstools:mkfs.fat busybox:busybox dnsmasq-base:dnsmasq iproute2:ip
      mmdebstrap:mmdebstrap zstd:zstd cpio:cpio lz4:lz4  # the self-contained deploy ramdisk
      e2fsprogs:mke2fs   # the real OS image (testbed/os_image.py): GPT, ext4 root
      iputils-ping:ping   # its static address answers from the bed's namespace (test_realos_deploy.py)
      tcpdump:tcpdump)    # and its VLAN's tagged frames are seen on the bed's bridge (no 802.1Q in this kernel)
# UEFI (testbed/vm.py): OVMF, iPXE's EFI binaries for TFTP and UEFI HTTP boot (the TFTP root is
# /usr/lib/ipxe), and the marker image's GPT + standalone GRUB (testbed/bootable_image.py)
need+=(ovmf:/usr/share/OVMF/OVMF_CODE.fd ipxe:/usr/lib/ipxe/snponly.efi ipxe:/usr/lib/ipxe/undionly.kpxe
       grub-efi-amd64-bin:/usr/lib/grub/x86_64-efi/linux.mod grub-common:grub-mkstandalone fdisk:sfdisk)
missing=()
for pair in "${need[@]}"; do
    pkg=${pair%%:*}; what=${pair#*:}
    if [[ $what == /* ]]; then [ -e "$what" ] || missing+=("$pkg")
    else command -v "$what" >/dev/null 2>&1 || [ -x "/usr/sbin/$what" ] || missing+=("$pkg"); fi
done
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "e2e: installing Debian packages: ${missing[*]}"
    timeout 120 apt-get update -qq
    timeout 300 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# libvirt: each test bed runs its own libvirtd over its own /etc/libvirt (testbed/vm.py QEMU_CONF:
# QEMU as root, no security driver, no cgroups); this machine's libvirt configuration is not touched.
id libvirt-qemu >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu

# Python side: libvirt bindings (sushy-emulator's libvirt driver, virtualbmc).
"$venv/bin/python" -c 'import libvirt, virtualbmc' 2>/dev/null ||
    timeout 300 "$venv/bin/pip" install -q -e '.[e2e]'

# The Debian kernel the VM boots (deploy ramdisk and written image): extracted, not installed, into
# the build cache outside the clone (testbed/cache.py), keyed by the kernel package's version.
kernel=$("$venv/bin/python" -m testbed.kernel)
echo "e2e: kernel in $kernel"

# The self-contained deploy ramdisk the VMs boot (testbed/ramdisk.py): mmdebstrap + the agent's
# wheels + that kernel's modules, in the build cache keyed by its inputs (minutes cold, seconds warm).
"$venv/bin/python" -m testbed.ramdisk
