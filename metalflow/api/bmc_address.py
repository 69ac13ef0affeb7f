"""metal3's BMC address forms, parsed into one value that picks the driver and the boot method.

Pure (no I/O): the workflow's Update validator and the CLI call it to reject a bad address
before anything is sent to a BMC. The scheme says three things: the protocol and vendor (the
driver registry's key, activities/bmc/registry.py) and how the host boots the deploy ramdisk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

Driver = Literal["redfish", "ipmi"]  # the protocol; with the vendor it keys the driver registry


class BootMethod(StrEnum):
    """How the host reaches the deploy ramdisk; the scheme decides, not the spec."""

    PXE = "pxe"  # network boot: DHCP entry + iPXE script from the boot server
    VIRTUAL_MEDIA = "virtual-media"  # the BMC mounts the deploy ISO
    UEFI_HTTP = "uefi-http"  # the firmware fetches the boot image over HTTP (not built yet)


@dataclass(frozen=True)
class Scheme:
    driver: Driver
    transport: str  # http or https for Redfish, udp for IPMI
    boot: BootMethod = BootMethod.PXE
    vendor: str = ""


_PXE, _VMEDIA, _UEFI_HTTP = BootMethod.PXE, BootMethod.VIRTUAL_MEDIA, BootMethod.UEFI_HTTP
SCHEMES: dict[str, Scheme] = {
    "ipmi": Scheme("ipmi", "udp"),
    "libvirt": Scheme("ipmi", "udp"),
    "redfish": Scheme("redfish", "https"),
    "redfish+http": Scheme("redfish", "http"),
    "redfish+https": Scheme("redfish", "https"),
    "redfish-virtualmedia": Scheme("redfish", "https", _VMEDIA),
    "redfish-virtualmedia+http": Scheme("redfish", "http", _VMEDIA),
    "redfish-virtualmedia+https": Scheme("redfish", "https", _VMEDIA),
    "redfish-uefihttp": Scheme("redfish", "https", _UEFI_HTTP),
    "redfish-uefihttp+http": Scheme("redfish", "http", _UEFI_HTTP),
    "redfish-uefihttp+https": Scheme("redfish", "https", _UEFI_HTTP),
    "idrac-redfish": Scheme("redfish", "https", _PXE, "idrac"),
    "idrac-redfish+http": Scheme("redfish", "http", _PXE, "idrac"),
    "idrac-redfish+https": Scheme("redfish", "https", _PXE, "idrac"),
    "idrac-virtualmedia": Scheme("redfish", "https", _VMEDIA, "idrac"),
    "idrac-virtualmedia+http": Scheme("redfish", "http", _VMEDIA, "idrac"),
    "idrac-virtualmedia+https": Scheme("redfish", "https", _VMEDIA, "idrac"),
    "ilo5-redfish": Scheme("redfish", "https", _PXE, "ilo5"),
    "ilo5-virtualmedia": Scheme("redfish", "https", _VMEDIA, "ilo5"),
}
# Where a protocol's address may name the system: Redfish under this prefix, IPMI nowhere.
_SYSTEM_PATH_PREFIX: dict[Driver, str | None] = {"redfish": "/redfish/v1/Systems/", "ipmi": None}

ACCEPTED_FORMS = (
    "host[:port] or ipmi://host[:port] (IPMI); redfish://, redfish+http://, redfish+https://, "
    "redfish-virtualmedia://, redfish-uefihttp://, idrac-redfish://, idrac-virtualmedia://, "
    "ilo5-redfish://, ilo5-virtualmedia:// followed by host[:port][/redfish/v1/Systems/<id>]"
)
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$")


class BMCAddressError(ValueError):
    """The address cannot be used; the message lists the accepted forms."""


@dataclass(frozen=True)
class BMCAddress:
    scheme: str
    driver: Driver
    host: str
    port: int
    system_path: str | None  # Redfish system resource path, e.g. /redfish/v1/Systems/1
    verify_tls: bool
    boot_method: BootMethod
    vendor: str
    transport: str

    @property
    def virtual_media(self) -> bool:
        """The host boots the deploy ISO from the BMC's virtual CD (no DHCP entry needed)."""
        return self.boot_method == BootMethod.VIRTUAL_MEDIA

    @property
    def base_url(self) -> str:
        """Redfish service root's origin (http[s]://host:port)."""
        return f"{self.transport}://{self.host}:{self.port}"


def parse_bmc_address(address: str, disable_certificate_verification: bool = False) -> BMCAddress:
    raw = address.strip()
    if not raw:
        raise BMCAddressError(f"the BMC address is empty; accepted forms: {ACCEPTED_FORMS}")
    scheme_name = raw.split("://", 1)[0].lower() if "://" in raw else "ipmi"
    scheme = SCHEMES.get(scheme_name)
    if scheme is None:
        raise BMCAddressError(f"unknown BMC address scheme {scheme_name!r}; accepted forms: {ACCEPTED_FORMS}")
    parts = urlsplit(raw if "://" in raw else f"ipmi://{raw}")
    if parts.username or parts.password:
        raise BMCAddressError(
            "the BMC address must not carry credentials (user:password@); "
            "put them in the Secret named by credentialsName"
        )
    host = parts.hostname or ""
    display_host = f"[{host}]" if ":" in host else host
    if not host or not _HOST.match(display_host):
        raise BMCAddressError(f"BMC address {address!r} has no valid host; accepted forms: {ACCEPTED_FORMS}")
    try:
        port = parts.port
    except ValueError:
        raise BMCAddressError(f"BMC address {address!r} has an invalid port") from None
    if port is None:
        port = {"udp": 623, "http": 80, "https": 443}[scheme.transport]
    path = parts.path.rstrip("/") or None
    prefix = _SYSTEM_PATH_PREFIX[scheme.driver]
    if path and prefix is None:
        raise BMCAddressError(
            f"an {scheme.driver.upper()} address takes no path (got {path!r}); write {scheme_name}://host[:port]"
        )
    if path and prefix and not path.startswith(prefix):
        raise BMCAddressError(
            f"Redfish system path {path!r} must look like {prefix}<id>; accepted forms: {ACCEPTED_FORMS}"
        )
    return BMCAddress(
        scheme=scheme_name,
        driver=scheme.driver,
        host=display_host,
        port=port,
        system_path=path,
        verify_tls=scheme.transport == "https" and not disable_certificate_verification,
        boot_method=scheme.boot,
        vendor=scheme.vendor,
        transport=scheme.transport,
    )
