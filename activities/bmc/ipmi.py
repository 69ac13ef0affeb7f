"""IPMI through pyghmi: power, boot device and what FRU data the BMC offers (no virtual media).

Cipher-suite negotiation: pyghmi's client proposes suite 17 (HMAC-SHA256) and, when a BMC
accepts the open-session request but answers with suite 3 (HMAC-SHA1) algorithms — as
pyghmi's own BMC server and some older BMCs do — it carries on with SHA-256 and the RAKP2
check fails as if the password were wrong. `_adopt_offered_suite` makes the client take the
algorithms the BMC actually chose (what IPMI 2.0 table 13-10 says the response carries).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command
from pyghmi.ipmi.private import session as ipmi_session

from activities.bmc.driver import BaseDriver, SystemCheck, reported_uuid
from metalflow.api.bmc import BootDevice, PowerAction, PowerResult
from metalflow.api.bmc_address import PRIVILEGE_LEVELS, BMCAddress
from metalflow.api.errors import ErrorName, permanent, transient
from metalflow.api.models import BootMode, HardwareDetails, HardwareSystemVendor
from metalflow.api.smbios import InvalidSystemUUID, from_smbios_bytes

_SHA1_AUTH = 1
_original_rmcp_response = ipmi_session.Session._got_rmcp_response


def _adopt_offered_suite(self: Any, data: Any) -> Any:
    # Open-session response: auth algorithm at byte 16, integrity at 24 (IPMI 2.0, 13.18).
    accepted = len(data) >= 25 and data[1] == 0 and data[0] == self.rmcptag
    if accepted and self.attemptedhash == 256 and data[16] == _SHA1_AUTH:
        self.attemptedhash = 1
        self.currhashlib = hashlib.sha1
        self.currhashlen = 12
    return _original_rmcp_response(self, data)


if getattr(ipmi_session.Session._got_rmcp_response, "__name__", "") != "_adopt_offered_suite":
    ipmi_session.Session._got_rmcp_response = _adopt_offered_suite

_BOOTDEV = {
    BootDevice.PXE: "network",
    BootDevice.DISK: "hd",
    BootDevice.CD: "optical",
}
_lock = threading.Lock()


def classify(err: Exception, addr: BMCAddress, username: str, secret: str) -> Exception:
    text = str(err)
    lowered = text.lower()
    if "privilege" in lowered:
        return permanent(
            ErrorName.BMC_AUTH,
            f"the IPMI BMC at {addr.host}:{addr.port} refused user {username!r} at privilege level "
            f"{addr.privilege_level} ({text}); grant the user that level in {secret}, or lower "
            "?privilegelevel= in the BMC address",
        )
    if any(s in lowered for s in ("password", "unauthorized name", "rakp", "integrity")):
        return permanent(
            ErrorName.BMC_AUTH,
            f"the IPMI BMC at {addr.host}:{addr.port} rejected user {username!r} ({text}); fix {secret}",
        )
    return transient("BMCUnreachable", f"IPMI BMC at {addr.host}:{addr.port}: {text}")


_sessions: dict[tuple[str, int, str, str], command.Command] = {}
_session_locks: dict[tuple[str, int, str, str], threading.Lock] = {}


@contextmanager
def session(addr: BMCAddress, username: str, password: str, secret: str) -> Iterator[command.Command]:
    """The BMC's shared session, held exclusively: pyghmi sessions are not thread-safe."""
    key = (addr.host, addr.port, username, hashlib.sha256(password.encode()).hexdigest())
    with _lock:
        lock = _session_locks.setdefault(key, threading.Lock())
    with lock:
        try:
            yield connect(addr, username, password, secret)
        except pyghmi_exc.IpmiException as err:
            cmd = _sessions.get(key)
            if cmd is None or cmd.ipmi_session.broken:  # a refused command leaves the session usable
                _sessions.pop(key, None)
            raise classify(err, addr, username, secret) from None


def _end_session(cmd: command.Command, host: str, username: str, password: str, port: int) -> None:
    """Log a session out so the next Command logs in afresh (at another privilege level).

    pyghmi leaves a logged-out session registered as still logging in, under the arguments its
    Command was made with, and would hand it to the next Command for the same BMC and user
    (which then fails), so that entry goes too."""
    cmd.ipmi_session.logout()
    ipmi_session.Session.initting_sessions.pop((host, username, password, port, None), None)


def connect(addr: BMCAddress, username: str, password: str, secret: str) -> command.Command:
    """One long-lived Command (RMCP+ session, kept alive by pyghmi) per BMC and credentials.

    pyghmi is built for long-lived sessions: a second Command for the same BMC and user while
    the first lives waits on the first's login forever, so sessions are shared, never remade.
    The session asks for the address's privilege level (?privilegelevel=, ADMINISTRATOR by
    default, as Ironic's ipmi_priv_level). pyghmi hands back a live session for the same BMC
    and user whatever its level, so an address asking another level logs the old one out first.
    """
    key = (addr.host, addr.port, username, hashlib.sha256(password.encode()).hexdigest())
    level = PRIVILEGE_LEVELS[addr.privilege_level or "ADMINISTRATOR"]
    with _lock:
        cmd = _sessions.pop(key, None)
        if cmd is not None and not cmd.ipmi_session.broken:
            if cmd.ipmi_session.privlevel == level:
                _sessions[key] = cmd
                return cmd
            _end_session(cmd, addr.host.strip("[]"), username, password, addr.port)
        try:
            cmd = command.Command(
                bmc=addr.host.strip("[]"),
                userid=username,
                password=password,
                port=addr.port,
                privlevel=level,
            )
        except pyghmi_exc.IpmiException as err:
            raise classify(err, addr, username, secret) from None
        _sessions[key] = cmd
        return cmd


def power_state(cmd: command.Command) -> bool:
    return cmd.get_power()["powerstate"] == "on"


_GET_SYSTEM_GUID = (0x06, 0x37)  # netfn App, Get System GUID (IPMI 2.0, 22.14)


def system_guid(cmd: command.Command) -> str:
    """The system GUID, decoded as SMBIOS wire format (what pyghmi's decoder and most BMCs
    assume; a BMC following IPMI 2.0's all-reversed order is matched by the boot server's
    `smbios.alternates`). "" when the BMC does not implement the command."""
    try:
        answer = cmd.raw_command(netfn=_GET_SYSTEM_GUID[0], command=_GET_SYSTEM_GUID[1])
    except pyghmi_exc.IpmiException:
        return ""
    if "error" in answer:
        return ""
    try:
        return reported_uuid(from_smbios_bytes(bytes(answer["data"])[:16]))
    except InvalidSystemUUID:
        return ""


def set_power(cmd: command.Command, action: PowerAction, wait_seconds: int) -> tuple[bool, bool]:
    on = power_state(cmd)
    if action == PowerAction.ON and on:
        return True, False
    if action in (PowerAction.OFF, PowerAction.SOFT_OFF) and not on:
        return False, False
    state = {
        PowerAction.ON: "on",
        PowerAction.OFF: "off",
        PowerAction.SOFT_OFF: "shutdown",
        PowerAction.REBOOT: "boot",  # pyghmi: on if off, reset if on
    }[action]
    cmd.set_power(state, wait=False)
    want_on = action in (PowerAction.ON, PowerAction.REBOOT)
    deadline = time.monotonic() + wait_seconds
    while power_state(cmd) != want_on:
        if time.monotonic() > deadline:
            if action == PowerAction.SOFT_OFF:
                cmd.set_power("off", wait=False)
                return power_state(cmd), True
            raise transient("PowerTimeout", f"IPMI power {action.value} not reached in {wait_seconds}s")
        time.sleep(0.5)
    return want_on, True


def set_boot_device(cmd: command.Command, device: BootDevice, persistent: bool, uefi: bool) -> bool:
    bootdev = _BOOTDEV.get(device)
    if bootdev is None:
        raise permanent(ErrorName.BMC_UNSUPPORTED, f"IPMI cannot boot from {device.value}")
    current = cmd.get_bootdev()
    same = current.get("bootdev") == bootdev and bool(current.get("persistent")) == persistent
    if same and bool(current.get("uefimode")) == uefi:  # the EFI bit is spec.bootMode
        return False
    cmd.set_bootdev(bootdev, persist=persistent, uefiboot=uefi)
    return True


def inventory(cmd: command.Command) -> HardwareDetails:
    """FRU data where the BMC has it; many (and pyghmi's server) have little."""
    vendor = HardwareSystemVendor()
    try:
        for name, info in cmd.get_inventory():
            if name == "System" and isinstance(info, dict):
                vendor = HardwareSystemVendor(
                    manufacturer=str(info.get("Manufacturer") or info.get("Product manufacturer") or ""),
                    product_name=str(info.get("Product name") or ""),
                    serial_number=str(info.get("Serial Number") or ""),
                )
                break
    except pyghmi_exc.IpmiException:
        pass
    return HardwareDetails(system_vendor=vendor)


class IPMIDriver(BaseDriver):
    """An IPMI BMC (and libvirt:// through virtualbmc): one shared session per BMC and user.

    IPMI has no virtual media: the base class refuses those calls with BMC_UNSUPPORTED."""

    protocol = "ipmi"

    def _session(self) -> AbstractContextManager[command.Command]:
        return session(self.addr, self.creds.username, self.creds.password, self.creds.secret)

    def validate(self) -> SystemCheck:
        with self._session() as cmd:
            return SystemCheck(powered_on=power_state(cmd), system_uuid=system_guid(cmd))

    def power(self, action: PowerAction, wait_seconds: int) -> PowerResult:
        with self._session() as cmd:
            on, changed = set_power(cmd, action, wait_seconds)
        return PowerResult(powered_on=on, changed=changed)

    def set_boot_device(self, device: BootDevice, persistent: bool, mode: BootMode | None) -> bool:
        uefi = mode in (None, BootMode.UEFI, BootMode.UEFI_SECURE_BOOT)
        with self._session() as cmd:
            return set_boot_device(cmd, device, persistent, uefi)

    def inventory(self) -> HardwareDetails:
        with self._session() as cmd:
            return inventory(cmd)
