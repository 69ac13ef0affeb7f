"""What an emulated server's firmware reads when it boots the deploy ramdisk: the boot medium's
agent token (activities/boot/agent_tokens.py), fetched the way real firmware fetches it.

PXE and UEFI HTTP: iPXE asks the boot server for the host's script (by MAC, the name dnsmasq
gives iPXE; by SMBIOS UUID when the host has no DHCP entry), whose kernel line carries the token
and the boot server's address. A script without a kernel line (one that boots nothing) means no
ramdisk comes up. Virtual media: the ISO the BMC has inserted, read with pycdlib.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, replace

import aiohttp
import pycdlib

from activities.boot.agent_tokens import KERNEL_ARG
from activities.boot.vmedia import AGENT_TOKEN, BOOT_CA

_TOKEN = re.compile(rf"\b{re.escape(KERNEL_ARG)}=(\S+)")
_BOOT_SERVER = re.compile(r"\bmetalflow\.boot_server=(\S+)")
_BOOT_CA = re.compile(r"\bmetalflow\.boot_ca=(\S+)")


@dataclass(frozen=True)
class Medium:
    boots: bool  # whether the deploy ramdisk comes up at all
    token: str = ""
    boot_server: str = ""
    boot_ca: bytes = b""  # the boot server's HTTPS CA, as the ramdisk's init finds it
    boot_ca_url: str = ""


def from_script(text: str) -> Medium:
    """What iPXE would boot from a host's script: its kernel line's token and boot server."""
    kernel = next((line for line in text.splitlines() if line.startswith("kernel ")), None)
    if kernel is None:
        return Medium(boots=False)
    token, server, ca = _TOKEN.search(kernel), _BOOT_SERVER.search(kernel), _BOOT_CA.search(kernel)
    return Medium(
        True,
        token.group(1) if token else "",
        server.group(1) if server else "",
        b"",
        ca.group(1) if ca else "",
    )


async def pxe(boot_server_url: str, mac: str, system_uuid: str) -> Medium:
    """The script iPXE gets: the host's by MAC, else (no DHCP entry for it) by SMBIOS UUID; and the
    CA its kernel line names, fetched as the ramdisk's init does."""
    base = boot_server_url.rstrip("/")
    async with aiohttp.ClientSession() as session:
        for url in (f"{base}/boot/{mac.lower().replace(':', '-')}.ipxe", f"{base}/by-uuid/{system_uuid}"):
            async with session.get(url) as resp:
                if resp.status != 200:
                    continue
                medium = from_script(await resp.text())
            if medium.boot_ca_url:
                async with session.get(medium.boot_ca_url) as resp:
                    resp.raise_for_status()
                    medium = replace(medium, boot_ca=await resp.read())
            return medium
    return Medium(boots=False)


async def vmedia(session: aiohttp.ClientSession, system_url: str) -> Medium:
    """The token on the ISO the system's manager has inserted (Redfish VirtualMedia)."""
    root = system_url.split("/redfish/")[0]

    async def get(path: str) -> dict:  # type: ignore[type-arg]
        async with session.get(path if path.startswith("http") else root + path) as resp:
            resp.raise_for_status()
            return await resp.json()  # type: ignore[no-any-return]

    system = await get(system_url)
    for manager in system.get("Links", {}).get("ManagedBy", []):
        media = (await get(manager["@odata.id"])).get("VirtualMedia", {}).get("@odata.id")
        for member in (await get(media)).get("Members", []) if media else []:
            device = await get(member["@odata.id"])
            if device.get("Inserted") and device.get("Image"):
                async with aiohttp.ClientSession() as plain, plain.get(device["Image"]) as resp:
                    resp.raise_for_status()
                    return _iso_medium(await resp.read())
    return Medium(boots=False)


def _iso_medium(data: bytes) -> Medium:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        out = io.BytesIO()
        try:
            iso.get_file_from_iso_fp(out, rr_path=AGENT_TOKEN)
        except pycdlib.pycdlibexception.PyCdlibInvalidInput:
            return Medium(boots=True)  # an ISO without a token: the ramdisk boots, holds none
        grub = io.BytesIO()
        iso.get_file_from_iso_fp(grub, rr_path="/boot/grub/grub.cfg")
        ca = io.BytesIO()
        try:
            iso.get_file_from_iso_fp(ca, rr_path=BOOT_CA)
        except pycdlib.pycdlibexception.PyCdlibInvalidInput:
            pass  # no HTTPS boot server configured
    finally:
        iso.close()
    server = _BOOT_SERVER.search(grub.getvalue().decode())
    return Medium(True, out.getvalue().decode().strip(), server.group(1) if server else "", ca.getvalue())
