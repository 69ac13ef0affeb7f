"""Vendor drivers: a vendor's quirks live in a subclass of its protocol's driver.

iDRAC and iLO 5 have no quirk built yet, so their drivers are plain Redfish with the vendor
recorded: status shows which driver the address asked for, and a quirk found later (an iDRAC
virtual-media path, an iLO boot-mode rule) has a class to go into.
"""

from __future__ import annotations

from activities.bmc.redfish import RedfishDriver


class IDRACRedfishDriver(RedfishDriver):
    """Dell iDRAC (idrac-redfish://, idrac-virtualmedia://, each also +http/+https)."""

    vendor = "idrac"


class ILO5RedfishDriver(RedfishDriver):
    """HPE iLO 5 (ilo5-redfish://, ilo5-virtualmedia://, each also +http/+https)."""

    vendor = "ilo5"
