"""Apply the host's preprovisioning network data (the deploy ISO's /metalflow/network_data.json,
already checked by metalflow.api.netdata when the ISO was made) with `ip`; /etc/resolv.conf for DNS.

    python3 netdata.py FILE     # prints the interfaces that got a static address, one a line

The ramdisk's init runs DHCP only on the links this leaves out (and on links a `*_dhcp` network
names). Standard library only: the ramdisk's Python runs it before the agent starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def interfaces_by_mac() -> dict[str, str]:
    found = {}
    for dev in Path("/sys/class/net").iterdir():
        try:
            found[(dev / "address").read_text().strip().lower()] = dev.name
        except OSError:
            continue
    return found


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"metalflow: netdata: ip {' '.join(args)}: {done.stderr.strip()}", file=sys.stderr)


def apply(data: dict, by_mac: dict[str, str]) -> list[str]:
    static: list[str] = []
    for link in data.get("links", []):
        name = by_mac.get(link["mac"])
        if name is None:
            print(f"metalflow: netdata: no NIC with MAC {link['mac']} (link {link['id']})", file=sys.stderr)
            continue
        if link.get("mtu"):
            ip("link", "set", name, "mtu", str(link["mtu"]))
        ip("link", "set", name, "up")
    for net in data.get("networks", []):
        name = by_mac.get(net["mac"])
        if name is None or not net.get("address"):
            continue  # a *_dhcp network: the init's DHCP serves it
        ip("addr", "add", net["address"], "dev", name)
        for route in net.get("routes", []):
            to = "default" if route["to"] in ("0.0.0.0/0", "::/0") else route["to"]
            ip("route", "replace", to, "via", route["via"], "dev", name)
        if name not in static:
            static.append(name)
    if data.get("dns"):
        Path("/etc/resolv.conf").write_text("".join(f"nameserver {a}\n" for a in data["dns"]))
    return static


def main() -> int:
    data = json.loads(Path(sys.argv[1]).read_text())
    for name in apply(data, interfaces_by_mac()):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
