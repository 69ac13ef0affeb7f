#!/usr/bin/env bash
# Build the metalflow deploy ramdisk (initramfs) from Debian packages.
#   ramdisk/build.sh --test OUT      small busybox ramdisk (init + parser, no agent): what CI builds
#   ramdisk/build.sh --vm OUT KROOT  busybox + virtio/9p modules from an extracted Debian kernel
#                                    (KROOT = dpkg -x of linux-image-*): the developer fast loop,
#                                    whose agent runs from the host's Python shared read-only over 9p
#                                    (METALFLOW_E2E_RAMDISK=9p-dev; never what `make e2e` boots)
# The self-contained ramdisk a server boots: `python -m testbed.ramdisk --out DIR` (README.md).
set -euo pipefail
mode=${1:?--test or --vm}; out=${2:?output directory}
here=$(cd "$(dirname "$0")" && pwd); repo=$(dirname "$here")
mkdir -p "$out"; out=$(cd "$out" && pwd)
root=$(mktemp -d); trap 'rm -rf "$root"' EXIT

copy_exec() {  # a binary and the shared libraries it needs, as initramfs-tools does
    install -D "$1" "$root$1"
    ldd "$1" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do install -D "$lib" "$root$lib"; done
}

busybox_root() {
    copy_exec "$(command -v busybox)"
    mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/lib/metalflow"
    for applet in sh mount cat tr echo ip udhcpc modprobe insmod sleep mkdir ln chroot poweroff cut date \
                  seq grep awk readlink kill sort cp sed; do
        ln -sf "$(command -v busybox)" "$root/bin/$applet"
    done
    install -D -m 0755 "$here/udhcpc.script" "$root/etc/udhcpc/default.script"
}

case "$mode" in
--test)
    busybox_root
    ;;
--vm)
    kroot=${3:?extracted Debian kernel package (dpkg -x linux-image-*)}
    busybox_root
    cp "$kroot"/boot/vmlinuz-* "$out/vmlinuz"
    # busybox insmod, in dependency order (a dpkg -x'd kernel has no modules.dep for modprobe)
    mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover
          virtio_net virtio_blk netfs fscache 9pnet 9pnet_virtio 9p"
    mkdir -p "$root/lib/modules/metalflow"
    for m in $mods; do
        ko=$(find "$kroot"/lib/modules/*/kernel -name "$m.ko" -print -quit)
        [ -n "$ko" ] || { echo "module $m missing from $kroot" >&2; exit 1; }
        cp "$ko" "$root/lib/modules/metalflow/"
        echo "$m" >> "$root/lib/modules/metalflow/order"
    done
    ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
install -m 0755 "$here/init" "$root/init"
install -m 0644 "$here/cmdline.sh" "$root/lib/metalflow/cmdline.sh"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initrd.img"
echo "built $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1))"
