"""Network boot activities: per-host iPXE script and dnsmasq entry, written atomically; for
virtual-media hosts, the host's own deploy ISO (activities/boot/vmedia.py).

The boot method comes from the BMC address's scheme: PXE and UEFI HTTP boot share the per-host
iPXE script (the same DHCP entry: dnsmasq answers an HTTPClient request with the EFI iPXE's URL,
dnsmasq.conf.j2), and the BMC is asked for the UefiHttp boot target (workflows/inband.py).

dnsmasq reads `dhcp-hostsdir` itself when files change; a SIGHUP (when its pid file is
configured) makes it drop cached entries at once, e.g. after cleanup.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from temporalio import activity

from activities.boot import agent_tokens, by_uuid, dnsmasq, ipxe, vmedia
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
from metalflow.api.models import BootMode, HostRef, SecretRef
from metalflow.api.netdata import NETWORK_DATA_KEY, NetworkDataError, parse_network_data
from metalflow.runtime.secrets import load_yaml, resolve, secret_key
from metalflow.runtime.settings import Settings, get_settings


def ipxe_dir(settings: Settings) -> Path:
    return settings.boot_dir / "boot"


def _check_uefi_http(req: BootPrepareRequest, settings: Settings, arch: Architecture) -> None:
    """UEFI HTTP boot: the firmware fetches the EFI iPXE from the boot server (dnsmasq.conf.j2
    sends it `<boot server>/<arch.uefi_ipxe>`), which chains the host's iPXE script as PXE does.
    Refused before anything is written when the host is not UEFI or the binary is not served."""
    who = f"{req.host.namespace}/{req.host.name}"
    if req.boot_mode == BootMode.LEGACY:
        raise permanent(
            ErrorName.INVALID_SPEC,
            f"{who}: spec.bootMode legacy cannot boot by UEFI HTTP (redfish-uefihttp://); set bootMode "
            "UEFI, or use redfish:// (PXE) for a legacy host",
        )
    binary = settings.boot_dir / arch.uefi_ipxe
    if not binary.is_file():
        raise permanent(
            ErrorName.BOOT_METHOD_NOT_BUILT,
            f"{who}: UEFI HTTP boot serves {arch.uefi_ipxe} from the boot server, but {binary} does not "
            f"exist; copy it there (Debian's ipxe package: /usr/lib/ipxe/{arch.uefi_ipxe})",
        )


@activity.defn(name=BOOT_PREPARE)
def prepare_boot(req: BootPrepareRequest) -> BootPrepareResult:
    settings = get_settings()
    base = settings.boot_server_url.rstrip("/")
    try:
        arch = architecture(req.architecture)
    except UnknownArchitecture as err:
        raise permanent(ErrorName.INVALID_SPEC, f"{req.host.namespace}/{req.host.name}: {err}") from None
    _publish_boot_ca(settings)
    iso_url = ""
    vmedia_boot = req.boot_method == BootMethod.VIRTUAL_MEDIA
    if vmedia_boot:
        # the host's own ISO: its identity, this boot's agent token (and network data) inside, a
        # new URL per boot
        network = _preprovisioning_network_data(req, settings)
        token = agent_tokens.issue(settings.boot_dir, req.host.host_id, agent_tokens.Medium.ISO)
        iso_url = vmedia.make_host_iso(settings, arch, req.host, req.boot_mac_address, network, token.value)
        if not req.boot_mac_address:  # nothing to tell DHCP: the BMC mounts the ISO
            return BootPrepareResult(iso_url=iso_url, agent_token=token.fingerprint)
    elif req.preprovisioning_network_data_name:
        raise permanent(
            ErrorName.PREPROVISIONING_NETWORK_DATA,
            f"{req.host.namespace}/{req.host.name}: spec.preprovisioningNetworkDataName "
            f"({req.preprovisioning_network_data_name!r}) is applied by the host's own virtual-media ISO; "
            "this host network-boots (PXE), where the ramdisk takes DHCP: use a *-virtualmedia:// BMC "
            "address or remove the field",
        )
    uefi_http = req.boot_method == BootMethod.UEFI_HTTP
    if uefi_http:
        _check_uefi_http(req, settings, arch)
    if not vmedia_boot:  # its iPXE script hands the token out, once
        token = agent_tokens.issue(settings.boot_dir, req.host.host_id, agent_tokens.Medium.PXE)
    if not req.boot_mac_address:
        return _prepare_without_mac(req, settings, arch, iso_url).model_copy(
            update={"agent_token": token.fingerprint}
        )
    text = ipxe.script(req.host, req.boot_mac_address, req.purpose, settings, arch, token=not vmedia_boot)
    mac_name = mac_file_name(req.boot_mac_address)
    write_atomically(ipxe_dir(settings) / f"{mac_name}.ipxe", text)
    write_atomically(ipxe_dir(settings) / f"{req.host.host_id}.ipxe", text)
    changed = write_atomically(
        dnsmasq.hosts_dir(settings) / req.host.host_id,
        dnsmasq.host_entry(req.boot_mac_address, req.host.name),
    )
    if changed:
        dnsmasq.reload(settings)
    return BootPrepareResult(
        ipxe_script_url=f"{base}/boot/{mac_name}.ipxe",
        iso_url=iso_url or f"{base}/images/deploy{arch.suffix}.iso",
        dhcp_entry_written=True,
        agent_token=token.fingerprint,
    )


def _publish_boot_ca(settings: Settings) -> None:
    """The boot server's HTTPS CA (settings.boot_server_ca), checked before anything is written,
    and copied where network-booted ramdisks fetch it (`<boot_server_url>/boot-ca.pem`)."""
    if settings.boot_server_ca is None:
        return
    try:
        pem = settings.boot_server_ca.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise permanent(
            ErrorName.INVALID_SPEC,
            f"METALFLOW_BOOT_SERVER_CA {settings.boot_server_ca}: cannot read it ({err}); give the PEM "
            "of the CA that signed the boot server's HTTPS certificate, or unset it",
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise permanent(
            ErrorName.INVALID_SPEC,
            f"METALFLOW_BOOT_SERVER_CA {settings.boot_server_ca} is not a PEM certificate; give the CA's PEM",
        )
    write_atomically(settings.boot_dir / ipxe.BOOT_CA, pem)


def _preprovisioning_network_data(req: BootPrepareRequest, settings: Settings) -> dict[str, Any] | None:
    """The Secret named by spec.preprovisioningNetworkDataName (key networkData), checked, in the
    form the ramdisk applies; resolved here, never carried by the workflow. The CLI keeps a
    hostfile's Secrets under <state_dir>/secrets/<namespace>/<name>.yaml: looked up there first,
    then in Kubernetes."""
    name = req.preprovisioning_network_data_name
    if not name:
        return None
    local = settings.state_dir / "secrets" / req.host.namespace / f"{name}.yaml"
    ref = SecretRef(name=name, namespace=req.host.namespace, path=str(local) if local.is_file() else None)
    text = resolve(ref, settings).require(NETWORK_DATA_KEY, ref)
    what = f"spec.preprovisioningNetworkDataName: {secret_key(ref, NETWORK_DATA_KEY)}"
    try:
        return parse_network_data(load_yaml(text, what), what).ramdisk_json()
    except NetworkDataError as err:
        raise permanent(
            ErrorName.PREPROVISIONING_NETWORK_DATA, f"{req.host.namespace}/{req.host.name}: {err}"
        ) from None


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
    vmedia.remove_host_isos(settings, host)  # the host leaves the ramdisk: its ISO is no longer needed
    agent_tokens.revoke(settings.boot_dir, host.host_id)  # and its agent's token opens nothing
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
