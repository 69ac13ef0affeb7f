#!/usr/bin/env bash
# Build the metalflow deploy ramdisk (initramfs) from Debian packages.
#   ramdisk/build.sh --test OUT      small busybox ramdisk (init + parser, no agent): what CI builds
#   ramdisk/build.sh --full OUT      Debian bookworm minbase + python3 + the metalflow wheel + kernel
# OUT receives initrd.img (and vmlinuz with --full). Copy both into the boot server's directory.
set -euo pipefail
mode=${1:?--test or --full}; out=${2:?output directory}
here=$(cd "$(dirname "$0")" && pwd); repo=$(dirname "$here")
mkdir -p "$out"; out=$(cd "$out" && pwd)
root=$(mktemp -d); trap 'rm -rf "$root"' EXIT

copy_exec() {  # a binary and the shared libraries it needs, as initramfs-tools does
    install -D "$1" "$root$1"
    ldd "$1" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do install -D "$lib" "$root$lib"; done
}

case "$mode" in
--test)
    copy_exec "$(command -v busybox)"
    mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/lib/metalflow"
    for applet in sh mount cat tr echo ip udhcpc modprobe sleep; do ln -sf "$(command -v busybox)" "$root/bin/$applet"; done
    ;;
--full)
    command -v debootstrap >/dev/null || { echo "install debootstrap first" >&2; exit 1; }
    debootstrap --variant=minbase --include=python3,python3-venv,iproute2,udhcpc,kmod,linux-image-amd64,qemu-utils,gdisk \
        bookworm "$root"
    (cd "$repo" && python3 -m pip wheel --no-deps -q -w "$root/tmp/wheel" .)
    chroot "$root" sh -c 'python3 -m venv /opt/metalflow && /opt/metalflow/bin/pip install -q /tmp/wheel/*.whl \
        && ln -s /opt/metalflow/bin/metalflow /usr/local/bin/metalflow && rm -rf /tmp/wheel'
    cp "$root"/boot/vmlinuz-* "$out/vmlinuz"
    mkdir -p "$root/lib/metalflow"
    ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
install -m 0755 "$here/init" "$root/init"
install -m 0644 "$here/cmdline.sh" "$root/lib/metalflow/cmdline.sh"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initrd.img"
echo "built $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1))"
