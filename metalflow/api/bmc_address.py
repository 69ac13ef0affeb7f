"""metal3's BMC address forms, parsed the way baremetal-operator parses them.

Pure (no I/O): the workflow's Update validator and the CLI call it to reject a bad address
before anything is sent to a BMC. The verdict and the parsed result follow baremetal-operator's
pkg/hardwareutils/bmc (GetParsedURL + the per-driver factories), which rests on Go's net/url:
so this module carries a small port of the parts of Go's URL parser that decide a BMC address
(scheme, opaque form, authority, host and port checks, path and query unescaping). Proven case
by case against upstream's own test table in tests/test_bmc_address_upstream.py.

Where metalflow is stricter than upstream (each one an address upstream accepts and Ironic or
the BMC would later refuse, or a secret in the wrong place), the error says so:
  - credentials in the address (user:password@) are refused: they belong in the Secret;
  - an address with no host (``redfish://``) is refused;
  - a port outside 1..65535 is refused;
  - ``privilegelevel`` must be one of Ironic's four levels (Ironic refuses others).

The scheme says three things: the protocol and vendor (the driver registry's key,
activities/bmc/registry.py) and how the host boots the deploy ramdisk.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal

from metalflow.api.errors import BMCAddressError
from metalflow.api.gourl import GoURL, GoURLError, parse_query, parse_url, split_host_port_ok

__all__ = [
    "ACCEPTED_FORMS",
    "PRIVILEGE_LEVELS",
    "SCHEMES",
    "BMCAddress",
    "BMCAddressError",
    "BootMethod",
    "Interfaces",
    "Scheme",
    "parse_bmc_address",
]

Driver = Literal["redfish", "ipmi"]  # the protocol; with the vendor it keys the driver registry


class BootMethod(StrEnum):
    """How the host reaches the deploy ramdisk; the scheme decides, not the spec."""

    PXE = "pxe"  # network boot: DHCP entry + iPXE script from the boot server
    VIRTUAL_MEDIA = "virtual-media"  # the BMC mounts the deploy ISO
    UEFI_HTTP = "uefi-http"  # the firmware fetches the boot image over HTTP (not built yet)


@dataclass(frozen=True)
class Interfaces:
    """What upstream's AccessDetails reports for a BMC type: Ironic's driver and interfaces and
    the capabilities the admission checks read (MAC needed, RAID, secure boot, ISO boot)."""

    ironic_driver: str
    boot: str
    bios: str = ""
    inspect: str = "redfish"
    firmware: str = "redfish"
    management: str = ""
    power: str = ""
    raid: str = "redfish"
    vendor: str = ""
    needs_mac: bool = False
    secure_boot: bool = True
    iso_preprovisioning: bool = False
    provisioning_network: bool = True

    @property
    def supports_raid(self) -> bool:
        return self.raid != "no-raid"


_IPMI = Interfaces("ipmi", "ipxe", inspect="", firmware="", raid="no-raid", secure_boot=False)
_IR = "idrac-redfish"
_IDRAC = Interfaces("idrac", "ipxe", bios=_IR, management=_IR, power=_IR, raid=_IR, vendor=_IR)
_FAMILIES: dict[str, Interfaces] = {
    "ipmi": _IPMI,
    # VirtualBMC: its MAC cannot be discovered from inside the VM, so it must be given.
    "libvirt": replace(_IPMI, needs_mac=True),
    "redfish": Interfaces("redfish", "ipxe"),
    "idrac-redfish": _IDRAC,
    "redfish-virtualmedia": Interfaces(
        "redfish", "redfish-virtual-media", iso_preprovisioning=True, provisioning_network=False
    ),
    "idrac-virtualmedia": replace(
        _IDRAC, boot="idrac-redfish-virtual-media", iso_preprovisioning=True, provisioning_network=False
    ),
    "redfish-uefihttp": Interfaces(
        "redfish", "redfish-https", iso_preprovisioning=True, provisioning_network=False
    ),
}


@dataclass(frozen=True)
class Scheme:
    driver: Driver
    transport: str  # http or https for Redfish, udp for IPMI
    boot: BootMethod = BootMethod.PXE
    vendor: str = ""
    family: str = "redfish"  # upstream's factory: which Interfaces the scheme reports


_PXE, _VMEDIA, _UEFI_HTTP = BootMethod.PXE, BootMethod.VIRTUAL_MEDIA, BootMethod.UEFI_HTTP
SCHEMES: dict[str, Scheme] = {
    "ipmi": Scheme("ipmi", "udp", family="ipmi"),
    "libvirt": Scheme("ipmi", "udp", family="libvirt"),
}
# Each Redfish type also takes +http and +https (upstream's RegisterFactory), https by default.
for _name, _boot, _vendor, _family in (
    ("redfish", _PXE, "", "redfish"),
    ("ilo5-redfish", _PXE, "ilo5", "redfish"),
    ("idrac-redfish", _PXE, "idrac", "idrac-redfish"),
    ("redfish-virtualmedia", _VMEDIA, "", "redfish-virtualmedia"),
    ("ilo5-virtualmedia", _VMEDIA, "ilo5", "redfish-virtualmedia"),
    ("idrac-virtualmedia", _VMEDIA, "idrac", "idrac-virtualmedia"),
    ("redfish-uefihttp", _UEFI_HTTP, "", "redfish-uefihttp"),
):
    for _suffix, _transport in (("", "https"), ("+http", "http"), ("+https", "https")):
        SCHEMES[_name + _suffix] = Scheme("redfish", _transport, _boot, _vendor, _family)

# Ironic's ipmi_priv_level values, and the number pyghmi and the IPMI spec give each.
PRIVILEGE_LEVELS: dict[str, int] = {"CALLBACK": 1, "USER": 2, "OPERATOR": 3, "ADMINISTRATOR": 4}
_DEFAULT_PRIVILEGE = "ADMINISTRATOR"
_DEFAULT_PORT = {"udp": 623, "http": 80, "https": 443}

ACCEPTED_FORMS = (
    "host[:port], ipmi://host[:port][?privilegelevel=LEVEL] or ipmi:host[:port] (IPMI, also "
    "libvirt://); redfish://, redfish-virtualmedia://, redfish-uefihttp://, idrac-redfish://, "
    "idrac-virtualmedia://, ilo5-redfish://, ilo5-virtualmedia:// (each also +http:// or "
    "+https://) followed by host[:port][/path of the system, e.g. /redfish/v1/Systems/1]"
)


_DNS_NAME = re.compile(
    r"(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])\.)*"
    r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]{0,61}[A-Za-z0-9])"
)


def _is_ip(text: str) -> bool:
    """Go's net.ParseIP: IPv4 or IPv6, no zone."""
    if "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _upstream_parsed_url(address: str) -> GoURL:
    """baremetal-operator's GetParsedURL: bare host[:port] and scheme:host mean IPMI/the scheme."""
    try:
        url = parse_url(address)
    except GoURLError as err:
        if ":" in address and not split_host_port_ok(address):
            raise BMCAddressError(
                f"BMC address {address!r} cannot be parsed ({err}); accepted forms: {ACCEPTED_FORMS}"
            ) from None
        url = GoURL(scheme="ipmi", host=address)
    else:
        try:
            if url.opaque:
                url = parse_url(address.replace(":", "://", 1))
            if not url.scheme and not url.split_host_port()[0]:
                url = parse_url("ipmi://" + address)
        except GoURLError as err:
            raise BMCAddressError(
                f"BMC address {address!r} cannot be parsed ({err}); accepted forms: {ACCEPTED_FORMS}"
            ) from None
    hostname = url.split_host_port()[0]
    if hostname and not _is_ip(hostname) and not _DNS_NAME.fullmatch(hostname):
        raise BMCAddressError(
            f"BMC address {address!r} has no valid host: {hostname!r} is neither an IP address nor a "
            "DNS name (letters, digits and inner hyphens, dot-separated)"
        )
    return url


# ---- the parsed address ----


@dataclass(frozen=True)
class BMCAddress:
    scheme: str
    driver: Driver
    host: str  # hostname, IPv6 in brackets: what goes before :port
    port: int  # the given port, else the protocol's default
    system_path: str | None  # Redfish system resource path (upstream's redfish_system_id)
    verify_tls: bool
    boot_method: BootMethod
    vendor: str
    transport: str
    netloc: str = ""  # host[:port] exactly as written (Go's URL.Host)
    path: str = ""  # the URL's path, unescaped (IPMI ignores it, as upstream does)
    query: tuple[tuple[str, str], ...] = ()
    privilege_level: str | None = None  # IPMI only: Ironic's ipmi_priv_level
    interfaces: Interfaces = _IPMI
    family: str = "ipmi"  # upstream's factory for the scheme
    port_text: str = ""  # the port as written ("" when left to the default)
    disable_certificate_verification: bool = False

    @property
    def virtual_media(self) -> bool:
        """The host boots the deploy ISO from the BMC's virtual CD (no DHCP entry needed)."""
        return self.boot_method == BootMethod.VIRTUAL_MEDIA

    @property
    def base_url(self) -> str:
        """Redfish service root's origin (http[s]://host:port)."""
        return f"{self.transport}://{self.host}:{self.port}"

    @property
    def hostname(self) -> str:
        """The host without IPv6 brackets (Go's URL.Hostname())."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def needs_mac(self) -> bool:
        return self.interfaces.needs_mac

    def driver_info(self) -> dict[str, Any]:
        """Upstream's Ironic driver_info for this address, without the credentials."""
        prefix = "ipmi" if self.driver == "ipmi" else "redfish"
        if self.driver == "ipmi":
            info: dict[str, Any] = {
                "ipmi_address": self.hostname,
                "ipmi_port": self.port_text or str(_DEFAULT_PORT["udp"]),
                "ipmi_priv_level": self.privilege_level,
            }
        else:
            info = {"redfish_address": f"{self.transport}://{self.netloc}"}
            if self.family == "redfish-uefihttp":
                info["redfish_system_id"] = self.path  # upstream always sets it for this type
            elif self.system_path is not None:
                info["redfish_system_id"] = self.system_path
        if self.disable_certificate_verification:
            info[f"{prefix}_verify_ca"] = False
        return info


def _system_path(family: str, path: str) -> str | None:
    if family == "redfish-uefihttp":
        return path  # upstream passes this one's path through untouched
    return path if path.strip("/") not in ("", "redfish/v1") else None


def _privilege_level(address: str, raw_query: str) -> str:
    values, failed = parse_query(raw_query)
    if failed or "privilegelevel" not in values:
        return _DEFAULT_PRIVILEGE  # upstream ignores a query it cannot read
    level = values["privilegelevel"][0]
    if level not in PRIVILEGE_LEVELS:
        raise BMCAddressError(
            f"BMC address {address!r}: privilegelevel={level!r} is not an IPMI privilege level; "
            f"write one of {', '.join(PRIVILEGE_LEVELS)} (upper case), or leave it out for ADMINISTRATOR"
        )
    return level


def parse_bmc_address(address: str, disable_certificate_verification: bool = False) -> BMCAddress:
    """Upstream's verdict and result for an address; every refusal is a BMCAddressError."""
    if not isinstance(address, str) or not address:
        raise BMCAddressError(f"the BMC address is empty; accepted forms: {ACCEPTED_FORMS}")
    url = _upstream_parsed_url(address)
    scheme = SCHEMES.get(url.scheme)
    if scheme is None:
        raise BMCAddressError(
            f"unknown BMC address scheme {url.scheme!r} in {address!r}; accepted forms: {ACCEPTED_FORMS}"
        )
    if url.userinfo is not None:
        raise BMCAddressError(
            "the BMC address must not carry credentials (user:password@); "
            "put them in the Secret named by credentialsName"
        )
    hostname, port_text = url.split_host_port()
    if not hostname:
        raise BMCAddressError(
            f"BMC address {address!r} has no valid host (nothing before the port or path); "
            f"accepted forms: {ACCEPTED_FORMS}"
        )
    port = int(port_text) if port_text else _DEFAULT_PORT[scheme.transport]
    if not 0 < port < 65536:
        raise BMCAddressError(f"BMC address {address!r} has an invalid port {port_text}: write 1 to 65535")
    interfaces = _FAMILIES[scheme.family]
    query, _ = parse_query(url.raw_query)
    return BMCAddress(
        scheme=url.scheme,
        driver=scheme.driver,
        host=f"[{hostname}]" if ":" in hostname else hostname,
        port=port,
        system_path=None if scheme.driver == "ipmi" else _system_path(scheme.family, url.path) or None,
        verify_tls=scheme.transport == "https" and not disable_certificate_verification,
        boot_method=scheme.boot,
        vendor=scheme.vendor,
        transport=scheme.transport,
        netloc=url.host,
        path=url.path,
        query=tuple((k, v) for k, vs in query.items() for v in vs),
        privilege_level=_privilege_level(address, url.raw_query) if scheme.driver == "ipmi" else None,
        interfaces=interfaces,
        family=scheme.family,
        port_text=port_text,
        disable_certificate_verification=disable_certificate_verification,
    )
