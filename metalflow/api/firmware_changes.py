"""Whether a host's firmware spec differs from what its status says the hardware has: the
lifecycle's servicing guards (metalflow/api/states.py) ask this."""

from __future__ import annotations

from metalflow.api.models import HostSpec, HostStatus


def settings_changed(spec: HostSpec, status: HostStatus) -> bool:
    """The spec's settings differ from what the BIOS last reported (values compared case-blind)."""
    reported = status.firmware_settings.settings if status.firmware_settings else {}
    return any(
        reported.get(name, "").lower() != value.lower() for name, value in spec.firmware_settings.items()
    )


def updates_changed(spec: HostSpec, status: HostStatus) -> bool:
    """The spec asks for updates other than the ones last applied."""
    applied = status.firmware_components.updates if status.firmware_components else []
    return bool(spec.firmware_updates) and spec.firmware_updates != applied
