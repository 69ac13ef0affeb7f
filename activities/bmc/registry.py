"""Which driver serves a BMC: the one table keyed by (protocol, vendor), and the only place
that chooses. A new vendor is a driver subclass plus one row here (and its scheme in
metalflow/api/bmc_address.py).
"""

from __future__ import annotations

from activities.bmc.driver import BMCDriver, Credentials
from activities.bmc.ipmi import IPMIDriver
from activities.bmc.redfish import RedfishDriver
from activities.bmc.vendors import IDRACRedfishDriver, ILO5RedfishDriver
from metalflow.api.bmc import BMCTarget
from metalflow.api.bmc_address import BMCAddress, BMCAddressError, parse_bmc_address
from metalflow.api.errors import ErrorName, permanent
from metalflow.runtime.secrets import resolve

DRIVERS: dict[tuple[str, str], type[BMCDriver]] = {
    ("redfish", ""): RedfishDriver,
    ("ipmi", ""): IPMIDriver,
    ("redfish", "idrac"): IDRACRedfishDriver,
    ("redfish", "ilo5"): ILO5RedfishDriver,
}


def driver_class(addr: BMCAddress) -> type[BMCDriver]:
    try:
        return DRIVERS[(addr.driver, addr.vendor)]
    except KeyError:
        raise permanent(
            ErrorName.BMC_UNSUPPORTED,
            f"no BMC driver is registered for {addr.scheme}:// "
            f"(protocol {addr.driver!r}, vendor {addr.vendor or 'none'!r})",
        ) from None


def open_driver(target: BMCTarget) -> BMCDriver:
    """The driver for a target, with its credentials resolved now: they never leave the call."""
    try:
        addr = parse_bmc_address(target.address, target.disable_certificate_verification)
    except BMCAddressError as err:
        raise permanent(ErrorName.BMC_ADDRESS, str(err)) from None
    cls = driver_class(addr)
    secret = resolve(target.credentials)
    creds = Credentials(
        username=secret.require("username", target.credentials),
        password=secret.require("password", target.credentials),
        version=secret.version,
        secret=target.credentials.describe(),
    )
    return cls(addr, creds)
