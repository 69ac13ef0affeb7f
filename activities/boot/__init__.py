"""Network boot activities: per-host iPXE script and dnsmasq entry, written atomically.

The boot method comes from the BMC address's scheme; one not built yet (UEFI HTTP) fails here,
at the host's first boot, rather than being PXE-booted behind the operator's back.

dnsmasq reads `dhcp-hostsdir` itself when files change; a SIGHUP (when its pid file is
configured) makes it drop cached entries at once, e.g. after cleanup.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from temporalio import activity

from activities.boot import by_uuid, dnsmasq, ipxe
from activities.boot.render import mac_file_name, write_atomically
from metalflow.api.bmc_address import BootMethod
from metalflow.api.boot import (
    BOOT_CLEANUP,
    BOOT_FORGET_UUID,
    BOOT_PREPARE,
    Architecture,
    BootPrepareRequest,
    BootPrepareResult,
    UnknownArchitecture,
    architecture,
)
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import HostRef
from metalflow.runtime.settings import Settings, get_settings


def ipxe_dir(settings: Settings) -> Path:
    return settings.boot_dir / "boot"


@activity.defn(name=BOOT_PREPARE)
def prepare_boot(req: BootPrepareRequest) -> BootPrepareResult:
    settings = get_settings()
    base = settings.boot_server_url.rstrip("/")
    if req.boot_method == BootMethod.UEFI_HTTP:
        raise permanent(
            ErrorName.BOOT_METHOD_NOT_BUILT,
            f"{req.host.namespace}/{req.host.name}: UEFI HTTP boot (redfish-uefihttp://) is not built yet; "
            "use redfish:// (PXE) or redfish-virtualmedia://",
        )
    if req.preprovisioning_network_data_name:
        # metal3 puts this Secret's network config on the host's own ramdisk image; metalflow
        # boots one shared ramdisk until the per-host ISO exists: refuse rather than ignore it.
        raise permanent(
            ErrorName.PREPROVISIONING_NETWORK_DATA,
            f"{req.host.namespace}/{req.host.name}: spec.preprovisioningNetworkDataName "
            f"({req.preprovisioning_network_data_name!r}) needs a per-host deploy ramdisk carrying that "
            "network configuration, which metalflow does not build yet; remove the field to boot the "
            "shared ramdisk with DHCP on the boot NIC",
        )
    try:
        arch = architecture(req.architecture)
    except UnknownArchitecture as err:
        raise permanent(ErrorName.INVALID_SPEC, f"{req.host.namespace}/{req.host.name}: {err}") from None
    iso_url = f"{base}/images/deploy{arch.suffix}.iso"
    if req.boot_method == BootMethod.VIRTUAL_MEDIA and not req.boot_mac_address:
        return BootPrepareResult(iso_url=iso_url)  # nothing to tell DHCP: the BMC mounts the ISO
    if not req.boot_mac_address:
        return _prepare_without_mac(req, settings, arch, iso_url)
    text = ipxe.script(req.host, req.boot_mac_address, req.purpose, settings, arch)
    mac_name = mac_file_name(req.boot_mac_address)
    write_atomically(ipxe_dir(settings) / f"{mac_name}.ipxe", text)
    write_atomically(ipxe_dir(settings) / f"{req.host.host_id}.ipxe", text)
    changed = write_atomically(
        dnsmasq.hosts_dir(settings) / req.host.host_id,
        dnsmasq.host_entry(req.boot_mac_address, req.host.name, arch=arch),
    )
    if changed:
        dnsmasq.reload(settings)
    return BootPrepareResult(
        ipxe_script_url=f"{base}/boot/{mac_name}.ipxe",
        iso_url=iso_url,
        dhcp_entry_written=True,
    )


def _prepare_without_mac(
    req: BootPrepareRequest, settings: Settings, arch: Architecture, iso_url: str
) -> BootPrepareResult:
    """A host enrolled without a MAC network-boots by the SMBIOS UUID its BMC reported (issue 21)."""
    if not req.system_uuid:
        raise permanent(
            ErrorName.NO_BOOT_IDENTITY,
            f"{req.host.namespace}/{req.host.name} has no spec.bootMACAddress and its BMC reported no "
            "system UUID to recognise it by at network boot; set spec.bootMACAddress to the MAC of the "
            "NIC that PXE-boots (or use a *-virtualmedia:// BMC address)",
        )
    url = by_uuid.prepare(req.host, req.system_uuid, req.purpose, settings, arch)
    return BootPrepareResult(ipxe_script_url=url, iso_url=iso_url)


@activity.defn(name=BOOT_CLEANUP)
def cleanup_boot(host: HostRef) -> None:
    settings = get_settings()
    entry = dnsmasq.hosts_dir(settings) / host.host_id
    script = ipxe_dir(settings) / f"{host.host_id}.ipxe"
    mac_line = entry.read_text().split(",", 1)[0] if entry.exists() else ""
    with contextlib.suppress(FileNotFoundError):
        entry.unlink()
    with contextlib.suppress(FileNotFoundError):
        script.unlink()
    by_uuid.release(settings.boot_dir, host)
    if mac_line:
        with contextlib.suppress(FileNotFoundError):
            (ipxe_dir(settings) / f"{mac_file_name(mac_line)}.ipxe").unlink()
        dnsmasq.reload(settings)


@activity.defn(name=BOOT_FORGET_UUID)
def forget_uuid(host: HostRef) -> bool:
    """The host is deleted: free its SMBIOS UUID claim (and any script left under it)."""
    return by_uuid.release(get_settings().boot_dir, host, claims=True)


ACTIVITIES = [prepare_boot, cleanup_boot, forget_uuid]
