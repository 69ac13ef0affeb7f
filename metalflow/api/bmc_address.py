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


# ---- a port of the parts of Go's net/url that upstream's verdict depends on ----


class _GoURLError(Exception):
    """Go's url.Parse refused the text; the message is Go's reason."""


@dataclass
class _GoURL:
    scheme: str = ""
    opaque: str = ""
    userinfo: str | None = None
    host: str = ""  # host[:port] as Go's URL.Host holds it (brackets kept)
    path: str = ""
    raw_query: str = ""

    def split_host_port(self) -> tuple[str, str]:
        """URL.Hostname() and URL.Port(): a non-numeric port stays part of the host."""
        host, port = self.host, ""
        colon = host.rfind(":")
        if colon != -1 and _valid_optional_port(host[colon:]):
            host, port = host[:colon], host[colon + 1 :]
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return host, port


_HOST_SAFE = frozenset(b"!$&'()*+,;=:[]<>\"-_.~")
_USERINFO_SAFE = frozenset(b"-._:~!$&'()*+,;=%@")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _is_alnum(c: int) -> bool:
    return 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


def _valid_optional_port(port: str) -> bool:
    return port == "" or (port[0] == ":" and all("0" <= c <= "9" for c in port[1:]))


def _unescape(text: str, mode: str) -> str:
    """Go's unescape: modes "host", "zone", "path", "query", "other"."""
    raw = text.encode()
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == 0x25:  # %
            if i + 2 >= len(raw) or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                raise _GoURLError(f"invalid URL escape {raw[i : i + 3].decode(errors='replace')!r}")
            value = int(raw[i + 1 : i + 3], 16)
            escape = raw[i : i + 3].decode()
            if mode == "host" and value >> 4 < 8 and escape != "%25":
                raise _GoURLError(f"invalid URL escape {escape!r}")
            if mode == "zone" and escape != "%25" and value != 0x20 and _host_must_escape(value):
                raise _GoURLError(f"invalid URL escape {escape!r}")
            out.append(value)
            i += 3
            continue
        if c == 0x2B and mode == "query":  # +
            out.append(0x20)
        elif mode in ("host", "zone") and c < 0x80 and _host_must_escape(c):
            raise _GoURLError(f"invalid character {chr(c)!r} in host name")
        else:
            out.append(c)
        i += 1
    return out.decode(errors="surrogateescape")


def _host_must_escape(c: int) -> bool:
    return not (_is_alnum(c) or c in _HOST_SAFE)


def _go_parse_ip_literal(text: str) -> None:
    """netip.ParseAddr on a bracketed host, which must then be IPv6 (zone allowed)."""
    address, _, zone = text.partition("%")
    if "%" in text and not zone:
        raise _GoURLError("invalid host: zone must be a non-empty string")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise _GoURLError(f"invalid host: {text!r} is not an IP address") from None
    if ip.version == 4:
        raise _GoURLError("invalid IP-literal")


def _parse_host(host: str) -> str:
    bracket = host.rfind("[")
    if bracket > 0:
        raise _GoURLError("invalid IP-literal")
    if bracket == 0:
        close = host.rfind("]")
        if close < 0:
            raise _GoURLError("missing ']' in host")
        colon_port = host[close + 1 :]
        if not _valid_optional_port(colon_port):
            raise _GoURLError(f"invalid port {colon_port!r} after host")
        hostname = host[1:close]
        zone_at = hostname.find("%25")
        if zone_at >= 0:
            unescaped = _unescape(hostname[:zone_at], "host") + _unescape(hostname[zone_at:], "zone")
        else:
            unescaped = _unescape(hostname, "host")
        _go_parse_ip_literal(unescaped)
        return f"[{unescaped}]{colon_port}"
    if ":" in host:  # never http/https here, so the last colon starts the port
        colon_port = host[host.rfind(":") :]
        if not _valid_optional_port(colon_port):
            raise _GoURLError(f"invalid port {colon_port!r} after host")
    return _unescape(host, "host")


def _go_url_parse(raw: str) -> _GoURL:
    """Go's url.Parse, for what a BMC address can contain."""
    text, _, fragment = raw.partition("#")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _GoURLError("invalid control character in URL")
    url = _GoURL()
    if text == "*":
        url.path = "*"
        return url
    rest = text
    for i, c in enumerate(text):
        if c.isascii() and c.isalpha():
            continue
        if c.isascii() and (c.isdigit() or c in "+-."):
            if i == 0:
                break
            continue
        if c == ":":
            if i == 0:
                raise _GoURLError("missing protocol scheme")
            url.scheme, rest = text[:i].lower(), text[i + 1 :]
        break
    if rest.endswith("?") and rest.count("?") == 1:
        rest = rest[:-1]
    else:
        rest, _, url.raw_query = rest.partition("?")
    if not rest.startswith("/"):
        if url.scheme:
            url.opaque = rest
            return url
        if ":" in rest.partition("/")[0]:
            raise _GoURLError("first path segment in URL cannot contain colon")
    if (url.scheme or not rest.startswith("///")) and rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        rest = slash + tail
        at = authority.rfind("@")
        url.host = _parse_host(authority[at + 1 :])
        if at >= 0:
            userinfo = authority[:at]
            if not all(c.isascii() and (_is_alnum(ord(c)) or ord(c) in _USERINFO_SAFE) for c in userinfo):
                raise _GoURLError("invalid userinfo")
            for part in userinfo.split(":", 1):
                _unescape(part, "other")
            url.userinfo = userinfo
    url.path = _unescape(rest, "path")
    if fragment:
        _unescape(fragment, "other")
    return url


def _go_split_host_port(hostport: str) -> bool:
    """Whether Go's net.SplitHostPort accepts the text (upstream's host:port fallback)."""
    last = hostport.rfind(":")
    if last < 0:
        return False
    start, end_host = 0, 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 == len(hostport):
            return False
        if end + 1 != last:
            return False
        start, end_host = 1, end + 1
    elif ":" in hostport[:last]:
        return False
    return "[" not in hostport[start:] and "]" not in hostport[end_host:]


def _go_parse_query(raw_query: str) -> tuple[dict[str, list[str]], bool]:
    """Go's url.ParseQuery: the pairs it could read, and whether it met an error."""
    values: dict[str, list[str]] = {}
    failed = False
    for pair in raw_query.split("&") if raw_query else []:
        if ";" in pair:
            failed = True
            continue
        if not pair:
            continue
        key, _, value = pair.partition("=")
        try:
            key, value = _unescape(key, "query"), _unescape(value, "query")
        except _GoURLError:
            failed = True
            continue
        values.setdefault(key, []).append(value)
    return values, failed


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


def _upstream_parsed_url(address: str) -> _GoURL:
    """baremetal-operator's GetParsedURL: bare host[:port] and scheme:host mean IPMI/the scheme."""
    try:
        url = _go_url_parse(address)
    except _GoURLError as err:
        if ":" in address and not _go_split_host_port(address):
            raise BMCAddressError(
                f"BMC address {address!r} cannot be parsed ({err}); accepted forms: {ACCEPTED_FORMS}"
            ) from None
        url = _GoURL(scheme="ipmi", host=address)
    else:
        try:
            if url.opaque:
                url = _go_url_parse(address.replace(":", "://", 1))
            if not url.scheme and not url.split_host_port()[0]:
                url = _go_url_parse("ipmi://" + address)
        except _GoURLError as err:
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
    values, failed = _go_parse_query(raw_query)
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
    query, _ = _go_parse_query(url.raw_query)
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
