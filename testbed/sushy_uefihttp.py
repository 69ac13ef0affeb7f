"""sushy-emulator's libvirt driver, taught the UefiHttp boot target (run as a module).

sushy-tools 2.2 lists UefiHttp among a System's allowable boot targets, but without an
HttpBootUri its PATCH handler boots the domain from PXE instead (its own code calls this a hack).
A real BMC asked for UefiHttp makes the firmware's HTTP boot option the next boot. This does the
same for a libvirt domain on OVMF: the NIC is made the boot device (as for Pxe) and OVMF is told
through fw_cfg (`opt/org.tianocore/IPv4PXESupport`, `IPv6PXESupport` = n, libvirt's
`<sysinfo type='fwcfg'>`) not to create its PXE boot options, so the NIC's first boot option is
"UEFI HTTPv4": the firmware's own HTTP boot client (Debian's OVMF has it built in) asks DHCP as
`HTTPClient` and fetches the boot URL it is given. Any other boot target removes those entries.
The fake driver (emulated fleets) stores the target as given, so emulated hosts see UefiHttp.

The driver is a subclass and the PATCH handler is wrapped, not copied. main() also installs
testbed.sushy_bios (BIOS settings pending until the next boot, checked against the registry, for
the fake driver too); this driver derives from its libvirt subclass; testbed.sushy_raid (a RAID
controller with four drives and persisted volumes on every fake system); and testbed.sushy_tasks
(SimpleUpdate starts a Task that runs METALFLOW_SUSHY_UPDATE_SECONDS, then bumps the version):

    python -m testbed.sushy_uefihttp --config emulator.conf -i 127.0.0.1 -p PORT

With METALFLOW_SUSHY_POWER_DRAW=LO-HI the fake driver's power delay is drawn from LO..HI seconds.
"""

from __future__ import annotations

import functools
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import flask
from sushy_tools.emulator import constants
from sushy_tools.emulator import main as emulator
from sushy_tools.emulator.resources.systems import libvirtdriver  # libvirt: None if not installed

from testbed import sushy_bios, sushy_raid, sushy_tasks

UEFI_HTTP = "UefiHttp"
NO_PXE = ("opt/org.tianocore/IPv4PXESupport", "opt/org.tianocore/IPv6PXESupport")


def set_http_boot(tree: ET.Element, on: bool) -> bool:
    """Add (on) or remove OVMF's no-PXE fw_cfg entries in a domain's XML; True if it changed."""
    changed = False
    for sysinfo in tree.findall("sysinfo[@type='fwcfg']"):
        for entry in list(sysinfo):
            if entry.get("name") in NO_PXE:
                sysinfo.remove(entry)
                changed = True
        if len(sysinfo) == 0:
            tree.remove(sysinfo)
    if on:
        sysinfo = ET.SubElement(tree, "sysinfo", {"type": "fwcfg"})
        for name in NO_PXE:
            ET.SubElement(sysinfo, "entry", {"name": name}).text = "n"
        changed = True
    return changed


def http_boot_set(tree: ET.Element) -> bool:
    names = {e.get("name") for e in tree.findall("sysinfo[@type='fwcfg']/entry")}
    return all(name in names for name in NO_PXE)


class UefiHttpLibvirtDriver(sushy_bios.PendingBiosLibvirtDriver):  # type: ignore[misc]
    """The libvirt driver plus the UefiHttp boot target (see the module's docstring) and pending
    BIOS settings (testbed.sushy_bios)."""

    def set_boot_device(self, identity: str, boot_source: str) -> None:
        http = boot_source == UEFI_HTTP
        super().set_boot_device(identity, constants.DEVICE_TYPE_PXE if http else boot_source)
        tree = ET.fromstring(self.get_xml_desc(self._get_domain(identity)))
        if set_http_boot(tree, http):
            self._defineDomain(tree)

    def get_boot_device(self, identity: str) -> str | None:
        device: str | None = super().get_boot_device(identity)
        if device == constants.DEVICE_TYPE_PXE:
            domain = self._get_domain(identity, readonly=True)
            tree = ET.fromstring(domain.XMLDesc(libvirtdriver.libvirt.VIR_DOMAIN_XML_INACTIVE))
            if http_boot_set(tree):
                return UEFI_HTTP
        return device


def _uefi_http_patch(view: Callable[..., Any]) -> Callable[..., Any]:
    """The System resource's handler, with a PATCH asking for UefiHttp (and no HttpBootUri)
    given to the driver as UefiHttp rather than turned into Pxe."""

    @functools.wraps(view)
    def handler(identity: str) -> Any:
        if flask.request.method == "PATCH":
            boot = (flask.request.get_json(silent=True) or {}).get("Boot") or {}
            if boot.get("BootSourceOverrideTarget") == UEFI_HTTP and not boot.get("HttpBootUri"):
                emulator.app.systems.set_boot_device(identity, UEFI_HTTP)
                if boot.get("BootSourceOverrideMode"):
                    emulator.app.systems.set_boot_mode(identity, boot["BootSourceOverrideMode"])
                return "", 204
        return view(identity)

    return handler


def draw_power_delay(lo: int, hi: int) -> None:
    """The fake driver applies a power change `random.randint(1, 11)` seconds late: draw from
    lo..hi instead (testbed/sushy.py's power_delay; still late, still random, only shorter)."""
    import random

    from sushy_tools.emulator.resources.systems import fakedriver

    class _Draw:
        @staticmethod
        def randint(a: int, b: int) -> int:
            return random.randint(lo, hi)

    fakedriver.random = _Draw


def main() -> int:
    draw = os.environ.get("METALFLOW_SUSHY_POWER_DRAW", "")
    if draw:
        lo, hi = draw.split("-")
        draw_power_delay(int(lo), int(hi))
    libvirtdriver.LibvirtDriver = UefiHttpLibvirtDriver  # what the emulator instantiates
    sushy_bios.install()  # the fake driver's BIOS; Bios/Settings checked, pending until boot
    sushy_raid.install()  # the fake driver's RAID controller (its driver derives from sushy_bios')
    sushy_tasks.install()  # SimpleUpdate runs as a Task, as on a BMC
    views = emulator.app.view_functions
    views["system_resource"] = _uefi_http_patch(views["system_resource"])
    return int(emulator.main())


if __name__ == "__main__":
    sys.exit(main())
