"""BMC activities: one contract (metalflow.api), two drivers picked by the address scheme.

Blocking (sushy, pyghmi), so these are plain functions the worker runs in its thread pool.
Credentials are resolved from the SecretRef on every call and never leave the call.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from temporalio import activity

from activities.bmc import ipmi, redfish
from metalflow.api.bmc import (
    BMC_EJECT_MEDIA,
    BMC_INSERT_MEDIA,
    BMC_INVENTORY,
    BMC_POWER,
    BMC_SET_BOOT_DEVICE,
    BMC_VALIDATE,
    BMCTarget,
    BMCValidation,
    BootDeviceRequest,
    MediaRequest,
    PowerRequest,
    PowerResult,
)
from metalflow.api.bmc_address import BMCAddress, BMCAddressError, parse_bmc_address
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import BootMode, HardwareDetails
from metalflow.runtime.secrets import resolve

F = TypeVar("F", bound=Callable[..., Any])
HEARTBEAT_EVERY = 2.0


def _keepalive(fn: F) -> F:
    """Heartbeat from a side thread while the blocking BMC call runs, so a worker that dies
    mid-call is noticed within the heartbeat timeout rather than the whole start-to-close."""

    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        stop = threading.Event()
        ctx = contextvars.copy_context()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_EVERY):
                with contextlib.suppress(Exception):
                    ctx.run(activity.heartbeat)

        ticker = threading.Thread(target=beat, name="bmc-heartbeat", daemon=True)
        ticker.start()
        try:
            return fn(*args)
        finally:
            stop.set()
            ticker.join()

    return run  # type: ignore[return-value]


def _open(target: BMCTarget) -> tuple[BMCAddress, redfish.Credentials]:
    try:
        addr = parse_bmc_address(target.address, target.disable_certificate_verification)
    except BMCAddressError as err:
        raise permanent(ErrorName.BMC_ADDRESS, str(err)) from None
    secret = resolve(target.credentials)
    creds = redfish.Credentials(
        username=secret.require("username", target.credentials),
        password=secret.require("password", target.credentials),
        version=secret.version,
        secret=target.credentials.describe(),
    )
    return addr, creds


def _ipmi(addr: BMCAddress, creds: redfish.Credentials) -> AbstractContextManager[Any]:
    return ipmi.session(addr, creds.username, creds.password, creds.secret)


@activity.defn(name=BMC_VALIDATE)
@_keepalive
def validate(target: BMCTarget) -> BMCValidation:
    """Registration: the credentials work and the system exists; report power and versions."""
    addr, creds = _open(target)
    if addr.driver == "redfish":
        on, system_id = redfish.call(addr, creds, lambda s: (redfish.power_state(s), s.path))
    else:
        with _ipmi(addr, creds) as cmd:
            on, system_id = ipmi.power_state(cmd), ""
    return BMCValidation(
        powered_on=on, credentials_version=creds.version, driver=addr.driver, system_id=system_id
    )


@activity.defn(name=BMC_POWER)
@_keepalive
def power(req: PowerRequest) -> PowerResult:
    addr, creds = _open(req.target)
    if addr.driver == "redfish":
        on, changed = redfish.call(addr, creds, lambda s: redfish.set_power(s, req.action, req.wait_seconds))
    else:
        with _ipmi(addr, creds) as cmd:
            on, changed = ipmi.set_power(cmd, req.action, req.wait_seconds)
    activity.logger.info("power %s on %s: on=%s changed=%s", req.action.value, addr.base_url, on, changed)
    return PowerResult(powered_on=on, changed=changed)


@activity.defn(name=BMC_SET_BOOT_DEVICE)
@_keepalive
def set_boot_device(req: BootDeviceRequest) -> None:
    addr, creds = _open(req.target)
    if addr.driver == "redfish":
        redfish.call(
            addr, creds, lambda s: redfish.set_boot_device(s, req.device, req.persistent, req.boot_mode)
        )
    else:
        uefi = req.boot_mode in (None, BootMode.UEFI, BootMode.UEFI_SECURE_BOOT)
        with _ipmi(addr, creds) as cmd:
            ipmi.set_boot_device(cmd, req.device, req.persistent, uefi)


@activity.defn(name=BMC_INVENTORY)
@_keepalive
def inventory(target: BMCTarget) -> HardwareDetails:
    addr, creds = _open(target)
    if addr.driver == "redfish":
        details: HardwareDetails = redfish.call(addr, creds, redfish.inventory)
        return details
    with _ipmi(addr, creds) as cmd:
        return ipmi.inventory(cmd)


def _redfish_only(addr: BMCAddress, what: str) -> None:
    if addr.driver != "redfish":
        raise permanent(
            ErrorName.BMC_UNSUPPORTED,
            f"{what} needs a Redfish BMC; {addr.scheme}:// has no virtual media — "
            "use a redfish-virtualmedia:// address or network boot",
        )


@activity.defn(name=BMC_INSERT_MEDIA)
@_keepalive
def insert_media(req: MediaRequest) -> None:
    addr, creds = _open(req.target)
    _redfish_only(addr, "inserting virtual media")
    redfish.call(addr, creds, lambda s: redfish.insert_media(s, req.image_url))


@activity.defn(name=BMC_EJECT_MEDIA)
@_keepalive
def eject_media(req: MediaRequest) -> None:
    addr, creds = _open(req.target)
    _redfish_only(addr, "ejecting virtual media")
    redfish.call(addr, creds, redfish.eject_media)


ACTIVITIES = [validate, power, set_boot_device, inventory, insert_media, eject_media]
