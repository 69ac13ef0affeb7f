"""The parts of Go's net/url (go1.26) that baremetal-operator's BMC address verdict rests on.

Pure: url.Parse (scheme, opaque form, authority, bracketed IP literals, port digits, userinfo
characters, percent-escapes per component), URL.Hostname()/Port(), net.SplitHostPort's verdict
and url.ParseQuery. Written from Go's behaviour (not its code); the verdicts it gives are
proven through upstream's test table in tests/test_bmc_address_upstream.py. Only
metalflow/api/bmc_address.py uses it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


class GoURLError(Exception):
    """Go's url.Parse refused the text; the message is Go's reason."""


@dataclass
class GoURL:
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
                raise GoURLError(f"invalid URL escape {raw[i : i + 3].decode(errors='replace')!r}")
            value = int(raw[i + 1 : i + 3], 16)
            escape = raw[i : i + 3].decode()
            if mode == "host" and value >> 4 < 8 and escape != "%25":
                raise GoURLError(f"invalid URL escape {escape!r}")
            if mode == "zone" and escape != "%25" and value != 0x20 and _host_must_escape(value):
                raise GoURLError(f"invalid URL escape {escape!r}")
            out.append(value)
            i += 3
            continue
        if c == 0x2B and mode == "query":  # +
            out.append(0x20)
        elif mode in ("host", "zone") and c < 0x80 and _host_must_escape(c):
            raise GoURLError(f"invalid character {chr(c)!r} in host name")
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
        raise GoURLError("invalid host: zone must be a non-empty string")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise GoURLError(f"invalid host: {text!r} is not an IP address") from None
    if ip.version == 4:
        raise GoURLError("invalid IP-literal")


def _parse_host(host: str) -> str:
    bracket = host.rfind("[")
    if bracket > 0:
        raise GoURLError("invalid IP-literal")
    if bracket == 0:
        close = host.rfind("]")
        if close < 0:
            raise GoURLError("missing ']' in host")
        colon_port = host[close + 1 :]
        if not _valid_optional_port(colon_port):
            raise GoURLError(f"invalid port {colon_port!r} after host")
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
            raise GoURLError(f"invalid port {colon_port!r} after host")
    return _unescape(host, "host")


def parse_url(raw: str) -> GoURL:
    """Go's url.Parse, for what a BMC address can contain."""
    text, _, fragment = raw.partition("#")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise GoURLError("invalid control character in URL")
    url = GoURL()
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
                raise GoURLError("missing protocol scheme")
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
            raise GoURLError("first path segment in URL cannot contain colon")
    if (url.scheme or not rest.startswith("///")) and rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        rest = slash + tail
        at = authority.rfind("@")
        url.host = _parse_host(authority[at + 1 :])
        if at >= 0:
            userinfo = authority[:at]
            if not all(c.isascii() and (_is_alnum(ord(c)) or ord(c) in _USERINFO_SAFE) for c in userinfo):
                raise GoURLError("invalid userinfo")
            for part in userinfo.split(":", 1):
                _unescape(part, "other")
            url.userinfo = userinfo
    url.path = _unescape(rest, "path")
    if fragment:
        _unescape(fragment, "other")
    return url


def split_host_port_ok(hostport: str) -> bool:
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


def parse_query(raw_query: str) -> tuple[dict[str, list[str]], bool]:
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
        except GoURLError:
            failed = True
            continue
        values.setdefault(key, []).append(value)
    return values, failed
