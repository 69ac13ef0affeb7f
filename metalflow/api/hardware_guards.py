"""The guards of the lifecycle's hardware stages (RAID, firmware settings and updates): data the
table in states.py names, kept here so that table stays one screenful per state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metalflow.api.firmware_changes import updates_changed
from metalflow.api.models import UpdatePolicyMode

if TYPE_CHECKING:
    from metalflow.api.states import Facts


def raid_requested(f: Facts) -> bool:
    """spec.raid names volumes to build (an empty list asks for none)."""
    return f.spec.raid is not None and f.spec.raid.requested


def firmware_settings_requested(f: Facts) -> bool:
    """HostFirmwareSettings asks for settings (checked, and those that differ written, while preparing)."""
    return bool(f.spec.firmware_settings)


def firmware_updates_requested(f: Facts) -> bool:
    """HostFirmwareComponents asks for updates (applied while preparing)."""
    return bool(f.spec.firmware_updates)


def updates_due(f: Facts) -> bool:
    """Servicing: updates not applied yet, and the HostUpdatePolicy applies them on reboot."""
    policy = f.spec.update_policy
    on_reboot = policy is not None and policy.firmware_updates == UpdatePolicyMode.ON_REBOOT
    return on_reboot and updates_changed(f.spec, f.status)
