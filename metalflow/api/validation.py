"""Spec checks beyond field types: run by the CLI before starting, and by the update validator.

Pure and deterministic, so the workflow can call it from an Update validator. Each message
names the field and what to write instead.
"""

from __future__ import annotations

from metalflow.api.bmc_address import BMCAddressError, BootMethod, parse_bmc_address
from metalflow.api.firmware_components import BUILT_COMPONENTS
from metalflow.api.models import BootMode, CleaningMode, HostSpec, InspectionMode, ProvisioningState


class SpecError(ValueError):
    """The spec cannot be acted on as written."""


def _raid_problems(spec: HostSpec, driver: str, scheme: str) -> list[str]:
    """metal3's webhook (validateRAID, validateBMCAccess) on spec.raid."""
    raid = spec.raid
    if raid is None:
        return []
    problems: list[str] = []
    hardware = raid.hardware_raid_volumes or []
    software = raid.software_raid_volumes or []
    if hardware and software:
        problems.append(
            "spec.raid: hardwareRAIDVolumes and softwareRAIDVolumes can not be set at the same time"
        )
    for i, volume in enumerate(hardware):
        if volume.physical_disks and not volume.controller:
            problems.append(
                f"spec.raid.hardwareRAIDVolumes[{i}]: 'physicalDisks' specified without 'controller' "
                f"in hardware RAID volume {i}"
            )
        count, disks = volume.number_of_physical_disks, len(volume.physical_disks)
        if count is not None and disks and count != disks:
            problems.append(
                f"spec.raid.hardwareRAIDVolumes[{i}]: the 'numberOfPhysicalDisks'[{count}] "
                f"and number of 'physicalDisks'[{disks}] is not same for volume {i}"
            )
    roots = sum(1 for v in software if v.root_volume)
    if roots > 1:
        problems.append("spec.raid: softwareRAIDVolumes[*].rootVolume can only be set once")
    if roots == 1 and spec.root_device_hints is not None:
        problems.append(
            "spec.raid: softwareRAIDVolumes[*].rootVolume and rootDeviceHints can not be set at the same time"
        )
    if software and spec.boot_mode == BootMode.LEGACY:
        problems.append(
            "spec.raid.softwareRAIDVolumes: a software RAID host boots by UEFI from the ESP metalflow copies "
            "to every disk (legacy BIOS boot from md arrays is not built); set spec.bootMode: UEFI"
        )
    if software and roots == 0 and spec.root_device_hints is not None:
        problems.append(
            "spec.rootDeviceHints: with softwareRAIDVolumes the image goes to the first volume (or the one "
            "marked rootVolume), never to a disk the hints pick; remove rootDeviceHints"
        )
    for i, sw_volume in enumerate(software):
        if sw_volume.root_volume and sw_volume.level != "1":
            problems.append(
                f"spec.raid.softwareRAIDVolumes[{i}]: softwareRAIDVolumes[{i}] with rootVolume set "
                "must use RAID level 1"
            )
    if hardware and driver == "ipmi":
        problems.append(f"spec.raid: BMC driver {scheme} does not support configuring RAID")
    return problems


def _root_device_problem(spec: HostSpec) -> str | None:
    """metal3's webhook (validateRootDeviceHints): /dev/<name> or /dev/disk/by-path/<name>."""
    hints = spec.root_device_hints
    if hints is None or not hints.device_name:
        return None
    name = hints.device_name
    sub = name.removeprefix("/dev/")
    if sub == name:
        return (
            "spec.rootDeviceHints.deviceName: device name of root device hint must be a /dev/ path, "
            f'not "{name}"'
        )
    if "/" in sub.removeprefix("disk/by-path/"):
        return (
            "spec.rootDeviceHints.deviceName: device name of root device hint must be path in /dev/ or "
            f'/dev/disk/by-path/, not "{name}"'
        )
    return None


def _interface_problems(spec: HostSpec) -> list[str]:
    """metal3's webhook (validateNetworkInterfaces)."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, nic in enumerate(spec.network_interfaces):
        if not nic.name and not nic.mac_address:
            problems.append(f"spec.networkInterfaces[{i}]: must specify either name or macAddress")
            continue
        if nic.name and nic.mac_address:
            problems.append(f"spec.networkInterfaces[{i}]: name and macAddress are mutually exclusive")
            continue
        if nic.key.lower() in seen:
            problems.append(f'spec.networkInterfaces[{i}]: duplicate interface selector for "{nic.key}"')
        seen.add(nic.key.lower())
    return problems


def _firmware_settings_problems(spec: HostSpec, driver: str, scheme: str) -> list[str]:
    """What can be told of the HostFirmwareSettings before the BMC's registry is read (the step
    checks the rest against it). A password never travels as a setting: the spec is kept in
    the workflow's history, where no secret may go."""
    problems: list[str] = []
    for i, update in enumerate(spec.firmware_updates):
        if driver != "redfish":
            problems.append(
                f"HostFirmwareComponents spec.updates[{i}]: BMC driver {scheme} has no firmware updates; "
                "use a Redfish BMC address or remove the updates"
            )
            break
        if update.component not in BUILT_COMPONENTS:
            problems.append(
                f"HostFirmwareComponents spec.updates[{i}].component {update.component}: metalflow "
                f"updates {' and '.join(BUILT_COMPONENTS)} (a NIC's firmware needs its own target); remove it"
            )
    if not spec.firmware_settings:
        return problems
    if driver != "redfish":
        problems.append(
            f"HostFirmwareSettings spec.settings: BMC driver {scheme} has no BIOS settings; "
            "use a Redfish BMC address or remove the settings"
        )
    for name in sorted(spec.firmware_settings):
        if "password" in name.lower():
            problems.append(
                f"HostFirmwareSettings spec.settings.{name}: a password cannot be set as a setting "
                "(settings are kept in the workflow's history); remove it"
            )
        elif not name.strip():
            problems.append("HostFirmwareSettings spec.settings: a setting has an empty name; remove it")
    return problems


def spec_problems(spec: HostSpec, namespace: str | None = None) -> list[str]:
    """Every reason metal3's webhook (and metalflow's own rules) reject this spec; [] when accepted.

    Each message names the field, then gives metal3's reason (baremetal-operator,
    internal/webhooks/metal3.io/v1alpha1/baremetalhost_validation.go).
    """
    try:
        address = parse_bmc_address(spec.bmc.address, spec.bmc.disable_certificate_verification)
    except BMCAddressError as err:
        raise SpecError(f"spec.bmc.address: {err}") from None
    problems: list[str] = []
    # parse_bmc_address refuses credentials in the address (user:password@) itself.
    scheme = address.scheme
    # metal3: only libvirt:// needs a MAC to register (NeedsMAC), and any driver once inspection
    # is disabled; otherwise inspection finds it. A PXE boot without one fails at boot, clearly.
    if (scheme == "libvirt" or spec.inspection_disabled) and not spec.boot_mac_address:
        problems.append(f"spec.bootMACAddress: BMC driver {scheme} requires a BootMACAddress value")
    if spec.boot_mode == BootMode.UEFI_SECURE_BOOT and address.driver == "ipmi":
        problems.append(f"spec.bootMode: BMC driver {scheme} does not support secure boot")
    if spec.boot_mode == BootMode.LEGACY and address.boot_method == BootMethod.UEFI_HTTP:
        problems.append(
            f"spec.bootMode: BMC driver {scheme} boots by UEFI HTTP, which legacy boot mode cannot do; "
            "set bootMode UEFI or use redfish:// (PXE)"
        )
    problems += _raid_problems(spec, address.driver, scheme)
    root = _root_device_problem(spec)
    if root:
        problems.append(root)
    if spec.inspection_mode == InspectionMode.FAST and address.driver == "ipmi":
        problems.append(
            f"spec.inspectionMode: BMC driver {scheme} does not support fast (out-of-band) inspection"
        )
    if spec.disable_power_off and not spec.online:
        problems.append(
            "spec.disablePowerOff: node can't simultaneously have online set to false "
            "and have power off disabled"
        )
    problems += _interface_problems(spec)
    problems += _firmware_settings_problems(spec, address.driver, scheme)
    if namespace is not None:
        for field, ref in (
            ("userData", spec.user_data),
            ("networkData", spec.network_data),
            ("metaData", spec.meta_data),
        ):
            if ref is not None and ref.path is None and ref.namespace != namespace:
                problems.append(f"spec.{field}: cross-namespace Secret references are not allowed")
    if spec.erase is not None and spec.automated_cleaning_mode == CleaningMode.DISABLED:
        problems.append(
            "spec.erase: cleaning is disabled (automatedCleaningMode: disabled), so nothing would be "
            "erased; set automatedCleaningMode to metadata or remove spec.erase"
        )
    if spec.join is not None and spec.image is None:
        problems.append(
            "spec.join needs spec.image: only a provisioned host can join a cluster (to deprovision "
            "a joined host, remove spec.join with spec.image: its Node is drained and deleted)"
        )
    return problems


def validate_spec(spec: HostSpec) -> None:
    problems = spec_problems(spec)
    if problems:
        raise SpecError("; ".join(problems))


def validate_update(spec: HostSpec, state: ProvisioningState, deleting: bool) -> None:
    """Reject updates the current state cannot take, leaving the host untouched."""
    if deleting or state in (
        ProvisioningState.DELETING,
        ProvisioningState.POWERING_OFF_BEFORE_DELETE,
    ):
        raise SpecError("the host is being deleted; its spec can no longer change")
    validate_spec(spec)
