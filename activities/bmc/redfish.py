"""Redfish through sushy: power, boot device, virtual media and out-of-band inventory.

`RedfishDriver` is the generic Redfish driver; vendor drivers subclass it (vendors.py).

Connections (and their sessions) are cached per BMC, user and credentials version within the
worker process, so a fleet does not log in on every call; a credentials change (new secret
version) naturally gets a fresh connection.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
import sushy
from sushy import exceptions as sx
from temporalio import activity

from activities.bmc import redfish_bios, redfish_firmware, redfish_raid
from activities.bmc.driver import BaseDriver, Credentials, SystemCheck, reported_uuid
from metalflow.api.bmc import BootDevice, PowerAction, PowerResult
from metalflow.api.bmc_address import BMCAddress
from metalflow.api.errors import ErrorName, permanent, transient
from metalflow.api.firmware import BIOSState
from metalflow.api.firmware_components import FirmwareTaskState
from metalflow.api.models import CPU, NIC, BootMode, HardwareDetails, HardwareSystemVendor, Storage
from metalflow.runtime.settings import get_settings

_BOOT_TARGETS = {
    BootDevice.PXE: sushy.BootSource.PXE,
    BootDevice.DISK: sushy.BootSource.HDD,
    BootDevice.CD: sushy.BootSource.CD,
    BootDevice.UEFI_HTTP: sushy.BootSource.UEFI_HTTP,
}
_BOOT_MODES = {
    BootMode.UEFI: sushy.BootSourceOverrideMode.UEFI,
    BootMode.UEFI_SECURE_BOOT: sushy.BootSourceOverrideMode.UEFI,
    BootMode.LEGACY: sushy.BootSourceOverrideMode.LEGACY,
}


log = logging.getLogger(__name__)

# A BMC may think for a while (10 s stalls are common), but one that says nothing for 30 s is
# treated as down for this attempt.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 30

_cache: dict[tuple[str, str, str, bool | str], sushy.Sushy] = {}
_cache_lock = threading.Lock()
CERTIFICATE_FAILURES = (
    "CERTIFICATE_VERIFY_FAILED",
    "certificate verify failed",
    "doesn't match",
    "Hostname mismatch",
)


def _verify(addr: BMCAddress) -> bool | str:
    """requests' `verify`: off when the host's spec says so, else METALFLOW_BMC_CA_BUNDLE (checked
    here, so a bad path is named before any BMC is called) or the system's trust store."""
    if not addr.verify_tls:
        return False
    bundle = get_settings().bmc_ca_bundle
    if bundle is None:
        return True
    try:
        pem = bundle.read_bytes()
    except OSError as err:
        raise permanent(
            ErrorName.BMC_TLS,
            f"METALFLOW_BMC_CA_BUNDLE={bundle}: cannot read it ({err.strerror}); fix the path",
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise permanent(
            ErrorName.BMC_TLS,
            f"METALFLOW_BMC_CA_BUNDLE={bundle}: no PEM certificate in it; give the CA's PEM",
        )
    return str(bundle)


def _connect(addr: BMCAddress, creds: Credentials) -> sushy.Sushy:
    verify = _verify(addr)
    key = (addr.base_url, creds.username, creds.version, verify)
    with _cache_lock:
        conn = _cache.get(key)
    if conn is None:
        conn = sushy.Sushy(
            addr.base_url + "/redfish/v1",
            username=creds.username,
            password=creds.password,
            verify=verify,
            # Retries belong to Temporal (bounded, with backoff, in the history): sushy's own
            # defaults (10 x 3 s per 5xx GET, 3 x 2 s per reset) would hide a sick BMC for
            # half a minute per call. One quick second try smooths a single hiccup.
            server_side_retries=1,
            server_side_retries_delay=1,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
        )
        with _cache_lock:
            _cache[key] = conn
    return conn


def _forget(addr: BMCAddress, creds: Credentials) -> None:
    with _cache_lock:
        for key in [k for k in _cache if k[:3] == (addr.base_url, creds.username, creds.version)]:
            _cache.pop(key, None)


def _attempt() -> str:
    """' (attempt N)' inside an activity: the operator sees how often it was tried."""
    try:
        return f" (attempt {activity.info().attempt})"
    except RuntimeError:
        return ""


def classify(err: Exception, addr: BMCAddress, creds: Credentials) -> Exception:
    """Map sushy's errors to permanent (bad input) or transient (retry) activity errors."""
    if isinstance(err, sx.AccessError):
        return permanent(
            ErrorName.BMC_AUTH,
            f"the BMC at {addr.base_url} rejected the credentials of user {creds.username!r} "
            f"(HTTP {err.status_code}); fix {creds.secret}",
        )
    where = f"the BMC at {addr.base_url}"
    if isinstance(err, sx.ServerSideError):
        return transient("BMCServerError", f"{where} failed with HTTP {err.status_code}{_attempt()}")
    if isinstance(err, sx.ConnectionError) and any(m in str(err) for m in CERTIFICATE_FAILURES):
        return permanent(
            ErrorName.BMC_TLS,
            f"{where} presented a certificate this worker does not trust ({_tls_reason(err)}); set "
            "METALFLOW_BMC_CA_BUNDLE to the CA that signed it, or spec.bmc.disableCertificateVerification",
        )
    if isinstance(err, sx.ConnectionError):
        return transient("BMCUnreachable", f"cannot reach {where}{_attempt()}: {_short(err)}")
    if isinstance(err, sx.HTTPError):
        return transient("BMCHTTPError", f"{where} answered HTTP {err.status_code}{_attempt()}")
    if isinstance(
        err, requests.exceptions.JSONDecodeError | sx.MissingAttributeError | sx.MalformedAttributeError
    ):
        return transient("BMCBadResponse", f"{where} sent a malformed Redfish response{_attempt()}: {err}")
    return err


def _tls_reason(err: Exception) -> str:
    """OpenSSL's own words ("certificate verify failed: unable to get local issuer certificate")
    out of urllib3's chain of wrappers."""
    found = re.search(r"\[SSL: \w+\] ([^(]+)", str(err)) or re.search(r"(Hostname mismatch[^'\"]*)", str(err))
    return found.group(1).strip() if found else _short(err)


def _short(err: Exception) -> str:
    """sushy repeats the URL and the whole urllib3 chain; the last clause is what matters."""
    text = str(err)
    return text.rsplit("Error: ", 1)[-1][:200]


def call(addr: BMCAddress, creds: Credentials, fn: Callable[[Any], Any]) -> Any:
    """Run `fn(system)` with the cached connection; one fresh login if the session went stale."""
    for attempt in (1, 2):
        try:
            return fn(_system(_connect(addr, creds), addr))
        except sx.AccessError as err:
            _forget(addr, creds)
            if attempt == 2:
                raise classify(err, addr, creds) from None
        except (sx.SushyError, requests.exceptions.JSONDecodeError) as err:
            if not isinstance(err, sx.HTTPError) or isinstance(err, sx.ServerSideError):
                _forget(addr, creds)  # a sick BMC gets a fresh connection next time
            raise classify(err, addr, creds) from None
    raise AssertionError("unreachable")


def _system(conn: sushy.Sushy, addr: BMCAddress) -> Any:
    if addr.system_path:
        try:
            return conn.get_system(addr.system_path)
        except sx.ResourceNotFoundError:
            members = conn.get_system_collection().members_identities
            raise permanent(
                ErrorName.BMC_NOT_FOUND,
                f"the BMC at {addr.base_url} has no system {addr.system_path}; "
                f"it has: {', '.join(sorted(members)) or 'none'}",
            ) from None
    members = list(conn.get_system_collection().members_identities)
    if len(members) != 1:
        raise permanent(
            ErrorName.BMC_NOT_FOUND,
            f"the BMC at {addr.base_url} manages {len(members)} systems; add the system path to "
            f"the address (one of: {', '.join(sorted(members)) or 'none'})",
        )
    return conn.get_system(members[0])


def power_state(system: Any, fresh: bool = False) -> bool:
    """The system's power; FRESH: it was fetched in this call already (`_system` GETs it), so
    a second GET would only double every read's cost to the BMC (at rest, a power read each
    interval per host)."""
    if not fresh:
        system.refresh(force=True)
    return bool(system.power_state == sushy.PowerState.ON)


POWER_POLL_FIRST, POWER_POLL_MAX = 0.25, 1.0  # seconds between reads while the power changes


def _wait_power(system: Any, want_on: bool, deadline: float) -> bool:
    """Poll until the BMC reports the wanted state; power changes are not instantaneous. The
    reads back off (0.25 s, growing by half up to 1 s): a fast BMC is seen at once, and a
    10-second change costs about a dozen reads (each a full System GET that sushy parses),
    not twenty: those reads were a tenth of the worker's CPU on a fleet (`bench.fleet --profile`)."""
    pause = POWER_POLL_FIRST
    while time.monotonic() < deadline:
        if power_state(system) == want_on:
            return True
        time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 1.5, POWER_POLL_MAX)
    return power_state(system) == want_on


def set_power(system: Any, action: PowerAction, wait_seconds: int) -> tuple[bool, bool]:
    """Apply `action`; return (powered_on, changed). Idempotent for on/off."""
    deadline = time.monotonic() + wait_seconds
    on = power_state(system, fresh=True)
    if action == PowerAction.ON:
        if on:
            return True, False
        system.reset_system(sushy.ResetType.ON)
        if not _wait_power(system, True, deadline):
            raise transient("PowerTimeout", f"the host did not power on within {wait_seconds}s")
        return True, True
    if action in (PowerAction.OFF, PowerAction.SOFT_OFF):
        if not on:
            return False, False
        if action == PowerAction.SOFT_OFF:
            system.reset_system(sushy.ResetType.GRACEFUL_SHUTDOWN)
            graceful_deadline = time.monotonic() + wait_seconds / 2
            if _wait_power(system, False, graceful_deadline):
                return False, True
        system.reset_system(sushy.ResetType.FORCE_OFF)
        if not _wait_power(system, False, deadline):
            raise transient("PowerTimeout", f"the host did not power off within {wait_seconds}s")
        return False, True
    # reboot: a powered-off host is simply powered on
    if not on:
        return set_power(system, PowerAction.ON, wait_seconds)
    system.reset_system(sushy.ResetType.FORCE_RESTART)
    if not _wait_power(system, True, deadline):
        raise transient("PowerTimeout", f"the host did not come back on within {wait_seconds}s")
    return True, True


def set_boot_device(system: Any, device: BootDevice, persistent: bool, mode: BootMode | None) -> bool:
    """Set the boot override; a no-op (returns False) when it is already so."""
    target = _BOOT_TARGETS[device]
    enabled = (
        sushy.BootSourceOverrideEnabled.CONTINUOUS if persistent else sushy.BootSourceOverrideEnabled.ONCE
    )
    want_mode = _BOOT_MODES.get(mode) if mode else None
    boot = system.boot
    if boot.target == target and boot.enabled == enabled and (want_mode is None or boot.mode == want_mode):
        return False
    if device == BootDevice.UEFI_HTTP:
        if want_mode == sushy.BootSourceOverrideMode.LEGACY:
            raise permanent(
                ErrorName.INVALID_SPEC,
                "UEFI HTTP boot needs UEFI boot mode; spec.bootMode is legacy (set UEFI, or boot by PXE)",
            )
        if boot.mode != sushy.BootSourceOverrideMode.UEFI:
            # a BMC offers UefiHttp only while the system boots UEFI: switch the mode first
            system.set_system_boot_options(mode=sushy.BootSourceOverrideMode.UEFI)
            system.refresh()
    system.set_system_boot_options(target=target, enabled=enabled, mode=want_mode)
    return True


def _virtual_media(system: Any) -> list[Any]:
    """The system's own virtual media (Redfish 1.13+), else its managers' (older BMCs)."""
    try:
        media: list[Any] = list(system.virtual_media.get_members())
        if media:
            return media
    except sx.SushyError:
        media = []
    for manager in system.managers:
        try:
            media.extend(manager.virtual_media.get_members())
        except sx.MissingAttributeError:
            continue
    return media


def insert_media(system: Any, url: str) -> None:
    for vm in _virtual_media(system):
        types = {str(t.value if hasattr(t, "value") else t) for t in (vm.media_types or [])}
        if types & {"CD", "DVD"}:
            if vm.image == url and vm.inserted:
                return
            if vm.inserted:
                vm.eject_media()
            vm.insert_media(url, inserted=True, write_protected=True)
            return
    raise permanent(ErrorName.BMC_UNSUPPORTED, "the BMC offers no CD/DVD virtual media device")


def eject_media(system: Any) -> None:
    for vm in _virtual_media(system):
        if vm.inserted:
            vm.eject_media()


def inventory(system: Any) -> HardwareDetails:
    """What the BMC knows without booting the host: the out-of-band half of inspection."""
    cpu = CPU()
    try:
        summary = system.processors.summary
        cpu = CPU(count=int(summary.count or 0), arch=str(summary.architecture or ""))
        members = system.processors.get_members()
        if members:
            cpu.model = members[0].model or ""
            cpu.clock_megahertz = float(members[0].max_speed_mhz or 0)
    except sx.SushyError:
        pass
    ram = 0
    try:
        ram = int((system.memory_summary.size_gib or 0) * 1024)
    except (sx.SushyError, AttributeError):
        pass
    nics: list[NIC] = []
    try:
        for iface in system.ethernet_interfaces.get_members():
            nics.append(
                NIC(
                    name=iface.identity or "",
                    mac=(iface.mac_address or "").lower(),
                    speed_gbps=int((iface.speed_mbps or 0) / 1000),
                )
            )
    except sx.SushyError:
        pass
    storage: list[Storage] = []
    try:
        for st in system.storage.get_members():
            for drive in st.drives:
                storage.append(
                    Storage(
                        name=drive.name or drive.identity or "",
                        size_bytes=int(drive.capacity_bytes or 0),
                        model=drive.model or "",
                        vendor=drive.manufacturer or "",
                        serial_number=drive.serial_number or "",
                    )
                )
    except sx.SushyError:
        pass
    details = HardwareDetails(
        system_vendor=HardwareSystemVendor(
            manufacturer=system.manufacturer or "",
            product_name=system.model or "",
            serial_number=system.serial_number or "",
        ),
        ram_mebibytes=ram,
        nics=nics,
        storage=storage,
        cpu=cpu,
        hostname=system.hostname or "",
    )
    details.firmware.bios.version = system.bios_version or ""
    return details


class RedfishDriver(BaseDriver):
    """Any Redfish BMC: every call runs against the address's system on a cached session."""

    protocol = "redfish"

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        return call(self.addr, self.creds, fn)

    def validate(self) -> SystemCheck:
        on, system_id, reported = self._call(lambda s: (power_state(s, fresh=True), s.path, s.uuid))
        return SystemCheck(powered_on=on, system_id=system_id, system_uuid=reported_uuid(reported))

    def power(self, action: PowerAction, wait_seconds: int) -> PowerResult:
        on, changed = self._call(lambda s: set_power(s, action, wait_seconds))
        return PowerResult(powered_on=on, changed=changed)

    def set_boot_device(self, device: BootDevice, persistent: bool, mode: BootMode | None) -> bool:
        return bool(self._call(lambda s: set_boot_device(s, device, persistent, mode)))

    def insert_media(self, image_url: str) -> None:
        self._call(lambda s: insert_media(s, image_url))

    def eject_media(self) -> None:
        self._call(eject_media)

    def inventory(self) -> HardwareDetails:
        details: HardwareDetails = self._call(inventory)
        return details

    def read_bios(self) -> BIOSState:
        where = f"the BMC at {self.addr.base_url}"
        state: BIOSState = self._call(lambda s: redfish_bios.read_bios(s, where))
        return state

    def apply_bios_settings(self, settings: Mapping[str, str | int | bool]) -> None:
        where = f"the BMC at {self.addr.base_url}"
        self._call(lambda s: redfish_bios.apply_bios(s, settings, where))

    def firmware_versions(self) -> dict[str, str]:
        found: dict[str, str] = self._call(redfish_firmware.versions)
        return found

    def firmware_tasks(self, component: str, image_url: str) -> list[str]:
        where = f"the BMC at {self.addr.base_url}"

        def listed(system: Any) -> list[str]:
            target = redfish_firmware.component_target(system, component, where)
            return redfish_firmware.tasks_for(self._root(), image_url, target)

        uris: list[str] = self._call(listed)
        return uris

    def start_firmware_update(self, component: str, image_url: str, known: list[str]) -> str:
        where = f"the BMC at {self.addr.base_url}"
        uri: str = self._call(
            lambda s: redfish_firmware.start_update(self._root(), s, component, image_url, known, where)
        )
        return uri

    def firmware_task(self, uri: str) -> FirmwareTaskState:
        state: FirmwareTaskState = self._call(lambda _: redfish_firmware.task_state(self._root(), uri))
        return state

    def _root(self) -> sushy.Sushy:
        """The service root of the current connection (inside `_call`: a fresh one after a re-login)."""
        return _connect(self.addr, self.creds)

    def configure_raid(self, volumes: Sequence[Mapping[str, Any]]) -> None:
        """metal3's hardwareRAIDVolumes through Redfish Storage/Volumes (redfish_raid.py)."""
        where = f"the BMC at {self.addr.base_url}"
        made: list[str] = self._call(lambda s: redfish_raid.configure(s, volumes, where))
        log.info("RAID on %s: %s", self.addr.base_url, "; ".join(made))
