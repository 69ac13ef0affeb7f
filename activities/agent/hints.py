"""metal3 root device hints: every given hint must match; no match is a typed error listing disks."""

from __future__ import annotations

from activities.agent.devices import BlockDevice
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import RootDeviceHints
from metalflow.api.root_device import GIB, hints_given, matches, no_match_message

# Without hints, Ironic picks the smallest disk of at least 4 GiB; so does metalflow.
DEFAULT_MIN_BYTES = 4 * GIB


def choose_root_device(devices: list[BlockDevice], hints: RootDeviceHints | None) -> BlockDevice:
    if hints is not None and hints_given(hints):
        candidates = [d for d in devices if matches(d.to_storage(), hints)]
    else:
        candidates = [d for d in devices if d.size_bytes >= DEFAULT_MIN_BYTES]
    if not candidates:
        raise permanent(ErrorName.NO_ROOT_DEVICE, no_match_message([d.to_storage() for d in devices], hints))
    return min(candidates, key=lambda d: (d.size_bytes, d.name))
