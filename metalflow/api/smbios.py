"""SMBIOS system UUIDs: one canonical text form and the byte orders they travel in (pure).

A host enrolled without `bootMACAddress` is recognised at its first network boot by the UUID of
its SMBIOS type 1 table: registration reads it from the BMC, iPXE sends `${uuid}` to the boot
server. The same 16 bytes reach us in three orders:

- SMBIOS wire format (SMBIOS 2.6 and later, DMTF DSP0134 7.2.1): the first three fields
  (time_low, time_mid, time_hi_and_version) little-endian, the last eight bytes as written.
  iPXE, Linux's `/sys/class/dmi/id/product_uuid`, dmidecode and Redfish's `UUID` print the decoded
  value, so these all agree on the text form. Firmware with SMBIOS older than 2.6 stored the
  fields big-endian; iPXE then prints the first three fields byte-swapped.
- IPMI "Get System GUID" (netfn App, command 37h): IPMI 2.0 says the GUID is sent least
  significant byte first, i.e. all 16 bytes reversed from RFC 4122 order. Many BMCs (and
  pyghmi's, and pyghmi's client decoder) send the SMBIOS wire format instead.
- RFC 4122 network order (big-endian throughout): what `uuid.UUID(...).bytes` is.

The canonical form is lower-case RFC 4122 text of the decoded value. `alternates` lists what the
same machine may be called when one side got the byte order the other way, so the boot server
still finds it (and says so in its log).
"""

from __future__ import annotations

import uuid


class InvalidSystemUUID(ValueError):
    """Text or bytes that are not a 16-byte UUID; the message names the value."""


def canonical(text: str) -> str:
    """Lower-case 8-4-4-4-12 text; braces, `urn:uuid:` and upper case accepted on input."""
    try:
        return str(uuid.UUID(text.strip()))
    except (ValueError, AttributeError):
        raise InvalidSystemUUID(f"{text!r} is not a system UUID (32 hex digits, e.g. 8-4-4-4-12)") from None


def _check(raw: bytes | bytearray | list[int]) -> bytes:
    data = bytes(raw)
    if len(data) != 16:
        raise InvalidSystemUUID(f"a system UUID is 16 bytes, got {len(data)}")
    return data


def from_smbios_bytes(raw: bytes | bytearray | list[int]) -> str:
    """The SMBIOS 2.6+ wire format (first three fields little-endian) to the canonical text."""
    return str(uuid.UUID(bytes_le=_check(raw)))


def to_smbios_bytes(text: str) -> bytes:
    return uuid.UUID(canonical(text)).bytes_le


def from_ipmi_spec_bytes(raw: bytes | bytearray | list[int]) -> str:
    """IPMI 2.0's Get System GUID order (all 16 bytes least significant first) to canonical text."""
    return str(uuid.UUID(bytes=_check(raw)[::-1]))


def to_ipmi_spec_bytes(text: str) -> bytes:
    return uuid.UUID(canonical(text)).bytes[::-1]


def is_nil(text: str) -> bool:
    """All zeros or all ones: SMBIOS's "not present" and "not set" values, never an identity."""
    value = uuid.UUID(canonical(text)).bytes
    return value in (bytes(16), b"\xff" * 16)


def alternates(text: str) -> list[str]:
    """Other names of the machine iPXE calls `text`, most likely first, `text` itself excluded:

    - the first three fields swapped: SMBIOS older than 2.6 (big-endian fields, which iPXE then
      decodes as little-endian), or a BMC reporting RFC 4122 order where we expect SMBIOS order;
    - what registration records when the BMC follows IPMI 2.0's all-reversed order and the
      bytes are decoded as SMBIOS wire format (pyghmi's assumption, and ours).
    """
    value = uuid.UUID(canonical(text))
    swapped = str(uuid.UUID(bytes=value.bytes_le))
    ipmi_read_as_smbios = from_smbios_bytes(value.bytes[::-1])
    seen = [str(value)]
    for name in (swapped, ipmi_read_as_smbios):
        if name not in seen:
            seen.append(name)
    return seen[1:]
