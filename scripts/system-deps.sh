#!/usr/bin/env bash
# Debian packages the tests and demo drive for real (qemu-img, dnsmasq, a DHCP client, ...).
# Installs what is missing when it can (root or sudo); otherwise says what to install.
set -euo pipefail
need=(qemu-utils:qemu-img dnsmasq-base:dnsmasq busybox:busybox iproute2:ip
      gdisk:sgdisk curl:curl openssl:openssl cpio:cpio
      docker-registry:docker-registry skopeo:skopeo apache2-utils:htpasswd  # oci:// image tests
      fdisk:sfdisk  # the agent's config drive partition (GPT and MBR), tests/test_configdrive_partition.py
      chromium:chromium)  # the Temporal UI in a real browser, tests/test_temporal_ui.py
missing=()
for pair in "${need[@]}"; do
  pkg=${pair%%:*}; cmd=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/sbin/$cmd" ] || missing+=("$pkg")
done
# make stack / make test-stack (testbed/stack.py): Debian's PostgreSQL, run by the test bed itself
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql-15)
# virtual-media deploy ISOs (testbed/deploy_iso.py builds the base; the worker re-masters it per host)
for pair in xorriso:/usr/bin/xorriso isolinux:/usr/lib/ISOLINUX/isolinux.bin \
            syslinux-common:/usr/lib/syslinux/modules/bios/ldlinux.c32 grub-common:/usr/bin/grub-mkstandalone \
            grub-efi-amd64-bin:/usr/lib/grub/x86_64-efi/linux.mod mtools:/usr/bin/mcopy dosfstools:/usr/sbin/mkfs.vfat; do
  [ -e "${pair#*:}" ] || missing+=("${pair%%:*}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "missing packages (install them as root): ${missing[*]}" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
