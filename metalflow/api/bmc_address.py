"""metal3's BMC address forms, parsed into one value that picks the driver.

Pure (no I/O): the workflow's Update validator and the CLI call it to reject a bad address
before anything is sent to a BMC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Driver = Literal["redfish", "ipmi"]


@dataclass(frozen=True)
class Scheme:
    driver: Driver
    transport: str  # http or https for Redfish, udp for IPMI
    virtual_media: bool = False
    uefi_http: bool = False
    vendor: str = ""


SCHEMES: dict[str, Scheme] = {
    "ipmi": Scheme("ipmi", "udp"),
    "libvirt": Scheme("ipmi", "udp"),
    "redfish": Scheme("redfish", "https"),
    "redfish+http": Scheme("redfish", "http"),
    "redfish+https": Scheme("redfish", "https"),
    "redfish-virtualmedia": Scheme("redfish", "https", virtual_media=True),
    "redfish-virtualmedia+http": Scheme("redfish", "http", virtual_media=True),
    "redfish-virtualmedia+https": Scheme("redfish", "https", virtual_media=True),
    "redfish-uefihttp": Scheme("redfish", "https", uefi_http=True),
    "redfish-uefihttp+http": Scheme("redfish", "http", uefi_http=True),
    "redfish-uefihttp+https": Scheme("redfish", "https", uefi_http=True),
    "idrac-redfish": Scheme("redfish", "https", vendor="idrac"),
    "idrac-redfish+http": Scheme("redfish", "http", vendor="idrac"),
    "idrac-redfish+https": Scheme("redfish", "https", vendor="idrac"),
    "idrac-virtualmedia": Scheme("redfish", "https", virtual_media=True, vendor="idrac"),
    "idrac-virtualmedia+http": Scheme("redfish", "http", virtual_media=True, vendor="idrac"),
    "idrac-virtualmedia+https": Scheme("redfish", "https", virtual_media=True, vendor="idrac"),
    "ilo5-redfish": Scheme("redfish", "https", vendor="ilo5"),
    "ilo5-virtualmedia": Scheme("redfish", "https", virtual_media=True, vendor="ilo5"),
}

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
    virtual_media: bool
    uefi_http: bool
    vendor: str
    transport: str

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
    if scheme.driver == "ipmi" and path:
        raise BMCAddressError(f"an IPMI address takes no path (got {path!r}); write ipmi://host[:port]")
    if scheme.driver == "redfish" and path and not path.startswith("/redfish/v1/Systems/"):
        raise BMCAddressError(
            f"Redfish system path {path!r} must look like /redfish/v1/Systems/<id>; "
            f"accepted forms: {ACCEPTED_FORMS}"
        )
    return BMCAddress(
        scheme=scheme_name,
        driver=scheme.driver,
        host=display_host,
        port=port,
        system_path=path,
        verify_tls=scheme.transport == "https" and not disable_certificate_verification,
        virtual_media=scheme.virtual_media,
        uefi_http=scheme.uefi_http,
        vendor=scheme.vendor,
        transport=scheme.transport,
    )
