"""Spec checks beyond field types: run by the CLI before starting, and by the update validator.

Pure and deterministic, so the workflow can call it from an Update validator. Each message
names the field and what to write instead.
"""

from __future__ import annotations

from metalflow.api.bmc_address import BMCAddressError, parse_bmc_address
from metalflow.api.models import HostSpec, ProvisioningState


class SpecError(ValueError):
    """The spec cannot be acted on as written."""


def validate_spec(spec: HostSpec) -> None:
    try:
        address = parse_bmc_address(spec.bmc.address, spec.bmc.disable_certificate_verification)
    except BMCAddressError as err:
        raise SpecError(f"spec.bmc.address: {err}") from None
    # parse_bmc_address refuses credentials in the address (user:password@) itself.
    if not address.virtual_media and not spec.boot_mac_address and not spec.externally_provisioned:
        raise SpecError(
            f"spec.bootMACAddress is required to network-boot with a {address.scheme}:// BMC; "
            "set it to the MAC of the NIC that PXE-boots, or use a *-virtualmedia:// address"
        )
    if spec.join is not None and spec.image is None:
        raise SpecError("spec.join needs spec.image: only a provisioned host can join a cluster")


def validate_update(spec: HostSpec, state: ProvisioningState, deleting: bool) -> None:
    """Reject updates the current state cannot take, leaving the host untouched."""
    if deleting or state in (
        ProvisioningState.DELETING,
        ProvisioningState.POWERING_OFF_BEFORE_DELETE,
    ):
        raise SpecError("the host is being deleted; its spec can no longer change")
    validate_spec(spec)
