"""metal3 root device hints: every given hint must match; no match is a typed error listing disks."""

from __future__ import annotations

from activities.agent.devices import BlockDevice
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import RootDeviceHints

GIB = 1 << 30
# Without hints, Ironic picks the smallest disk of at least 4 GiB; so does metalflow.
DEFAULT_MIN_BYTES = 4 * GIB


def _eq(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def matches(dev: BlockDevice, hints: RootDeviceHints) -> bool:
    checks = [
        hints.device_name is None
        or dev.name == hints.device_name
        or dev.name == "/dev/" + hints.device_name.removeprefix("/dev/"),
        hints.hctl is None or dev.hctl == hints.hctl,
        hints.model is None or hints.model.lower() in dev.model.lower(),
        hints.vendor is None or hints.vendor.lower() in dev.vendor.lower(),
        hints.serial_number is None or _eq(dev.serial, hints.serial_number),
        hints.min_size_gigabytes is None or dev.size_bytes >= hints.min_size_gigabytes * GIB,
        hints.wwn is None or _eq(dev.wwn, hints.wwn),
        hints.wwn_with_extension is None or _eq(dev.wwn_with_extension, hints.wwn_with_extension),
        hints.wwn_vendor_extension is None or _eq(dev.wwn_vendor_extension, hints.wwn_vendor_extension),
        hints.rotational is None or dev.rotational == hints.rotational,
    ]
    return all(checks)


def choose_root_device(devices: list[BlockDevice], hints: RootDeviceHints | None) -> BlockDevice:
    if hints is not None and hints.model_dump(exclude_none=True):
        candidates = [d for d in devices if matches(d, hints)]
    else:
        candidates = [d for d in devices if d.size_bytes >= DEFAULT_MIN_BYTES]
    if not candidates:
        listing = "; ".join(
            f"{d.name} {d.size_bytes // GIB}GiB model={d.model!r} serial={d.serial!r} "
            f"hctl={d.hctl!r} rotational={d.rotational}"
            for d in devices
        )
        wanted = hints.model_dump(exclude_none=True, by_alias=True) if hints else {"minSize": "4GiB"}
        raise permanent(
            ErrorName.NO_ROOT_DEVICE,
            f"no disk matches rootDeviceHints {wanted}; candidates: {listing or 'no disks found'}",
        )
    return min(candidates, key=lambda d: (d.size_bytes, d.name))
