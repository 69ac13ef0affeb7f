"""Preprovisioning network data: the deploy ramdisk's own network configuration.

metal3's `spec.preprovisioningNetworkDataName` names a Secret whose `networkData` key holds an
OpenStack network_data.json (what Ironic hands its ramdisk): `links` (NICs by MAC), `networks`
(an address on a link, its routes) and `services` (DNS). metalflow puts it on the host's own
virtual-media ISO and the ramdisk's init applies it instead of DHCP.

Pure: parsed and checked here (the activity that resolves the Secret calls it) so the ramdisk
gets only what it can apply. Messages name the field and the fix and never quote a value (the
content is a Secret's).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NETWORK_DATA_KEY = "networkData"
# Kinds of network the ramdisk applies: a static address, or DHCP on that link.
STATIC_TYPES = ("ipv4", "ipv6")
DHCP_TYPES = ("ipv4_dhcp", "ipv6_dhcp", "ipv6_slaac")


class NetworkDataError(ValueError):
    """The network data cannot be applied; the message names the field and the fix."""


def _checked(parse: Any, text: str, what: str) -> Any:
    """ipaddress's own messages quote the value: say what is wrong without it."""
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"not a valid {what}") from None


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # OpenStack's other keys (vif_id, ...)


class Link(_Part):
    id: str = Field(min_length=1)
    type: Literal["phy", "ethernet", "vif", "ovs", "bridge", "tap", "hw_veb", "vhostuser"] = "phy"
    ethernet_mac_address: str = Field(pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
    mtu: int | None = Field(default=None, ge=576, le=9216)

    @field_validator("ethernet_mac_address")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()


class Route(_Part):
    network: str
    netmask: str
    gateway: str

    @model_validator(mode="after")
    def _valid(self) -> Route:
        _checked(
            lambda t: ipaddress.ip_network(t, strict=False),
            f"{self.network}/{self.netmask}",
            "network/netmask",
        )
        _checked(ipaddress.ip_address, self.gateway, "gateway address")
        return self

    @property
    def cidr(self) -> str:
        return str(ipaddress.ip_network(f"{self.network}/{self.netmask}", strict=False))


class Network(_Part):
    id: str = Field(min_length=1)
    link: str = Field(min_length=1)
    type: Literal["ipv4", "ipv6", "ipv4_dhcp", "ipv6_dhcp", "ipv6_slaac"]
    ip_address: str | None = None
    netmask: str | None = None
    routes: list[Route] = Field(default_factory=list)
    dns_nameservers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _address(self) -> Network:
        if self.type in STATIC_TYPES:
            if not self.ip_address:
                raise ValueError("a static network needs ip_address (with netmask, or as ADDRESS/PREFIX)")
            self.interface()  # a bad address or netmask fails here
        for server in self.dns_nameservers:
            _checked(ipaddress.ip_address, server, "DNS server address")
        return self

    def interface(self) -> str:
        """ADDRESS/PREFIX as `ip addr add` takes it."""
        assert self.ip_address
        if "/" in self.ip_address:
            return str(_checked(ipaddress.ip_interface, self.ip_address, "ip_address"))
        if not self.netmask:
            raise ValueError("ip_address without a prefix needs netmask")
        return str(
            _checked(ipaddress.ip_interface, f"{self.ip_address}/{self.netmask}", "ip_address/netmask")
        )


class Service(_Part):
    type: str
    address: str

    @model_validator(mode="after")
    def _dns(self) -> Service:
        if self.type == "dns":
            _checked(ipaddress.ip_address, self.address, "DNS server address")
        return self


class NetworkData(_Part):
    links: list[Link] = Field(min_length=1)
    networks: list[Network] = Field(min_length=1)
    services: list[Service] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> NetworkData:
        ids = [link.id for link in self.links]
        if len(set(ids)) != len(ids):
            raise ValueError("links: two links share an id; give each link its own id")
        for i, net in enumerate(self.networks):
            if net.link not in ids:
                raise ValueError(f"networks[{i}].link names no entry of links; use one of the links' ids")
        return self

    def ramdisk_json(self) -> dict[str, Any]:
        """What the ramdisk's init reads (ramdisk/netdata.py): checked, addresses normalised."""
        by_id = {link.id: link for link in self.links}
        return {
            "links": [
                {"id": link.id, "mac": link.ethernet_mac_address, "mtu": link.mtu} for link in self.links
            ],
            "networks": [
                {
                    "link": net.link,
                    "mac": by_id[net.link].ethernet_mac_address,
                    "type": net.type,
                    "address": net.interface() if net.type in STATIC_TYPES else None,
                    "routes": [{"to": r.cidr, "via": r.gateway} for r in net.routes],
                }
                for net in self.networks
            ],
            "dns": [s.address for s in self.services if s.type == "dns"]
            + [d for net in self.networks for d in net.dns_nameservers],
        }


def parse_network_data(data: Any, what: str) -> NetworkData:
    """`data` (the Secret's parsed networkData) checked; `what` names it in the error."""
    if not isinstance(data, dict):
        raise NetworkDataError(
            f"{what} must be an OpenStack network_data.json object with links and networks; fix the Secret"
        )
    try:
        return NetworkData.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_input=False, include_url=False)[0]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        reason = first["msg"].removeprefix("Value error, ")
        at = f" at {field}" if field else ""
        raise NetworkDataError(
            f"{what}{at}: {reason} ({len(err.errors())} problem(s)); fix the Secret's network_data.json"
        ) from None
