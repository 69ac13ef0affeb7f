"""metal3 root device hints matched against a disk as inspection reports it (Storage).

One matcher for both sides: the agent picks the disk it writes to with it, and the workflows
check a spec's hints against the inventory before cleaning or deploying touches any disk.
"""

from __future__ import annotations

from metalflow.api.models import RootDeviceHints, Storage

GIB = 1 << 30


def _eq(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def hints_given(hints: RootDeviceHints | None) -> bool:
    return hints is not None and bool(hints.model_dump(exclude_none=True))


def matches(disk: Storage, hints: RootDeviceHints) -> bool:
    """Every hint given holds for `disk` (metal3/Ironic semantics: model and vendor are
    substrings, the rest exact, case-insensitive where Ironic is)."""
    names = {disk.name, *disk.alternate_names}
    checks = [
        hints.device_name is None
        or hints.device_name in names
        or "/dev/" + hints.device_name.removeprefix("/dev/") in names,
        hints.hctl is None or disk.hctl == hints.hctl,
        hints.model is None or hints.model.lower() in disk.model.lower(),
        hints.vendor is None or hints.vendor.lower() in disk.vendor.lower(),
        hints.serial_number is None or _eq(disk.serial_number, hints.serial_number),
        hints.min_size_gigabytes is None or disk.size_bytes >= hints.min_size_gigabytes * GIB,
        hints.wwn is None or _eq(disk.wwn, hints.wwn),
        hints.wwn_with_extension is None or _eq(disk.wwn_with_extension, hints.wwn_with_extension),
        hints.wwn_vendor_extension is None or _eq(disk.wwn_vendor_extension, hints.wwn_vendor_extension),
        hints.rotational is None or disk.rotational == hints.rotational,
    ]
    return all(checks)


def describe(disks: list[Storage]) -> str:
    return (
        "; ".join(
            f"{d.name} {d.size_bytes / GIB:.1f}GiB model={d.model!r} serial={d.serial_number!r} "
            f"hctl={d.hctl!r} rotational={d.rotational}"
            for d in disks
        )
        or "no disks found"
    )


def no_match_message(disks: list[Storage], hints: RootDeviceHints | None) -> str:
    given = hints is not None and hints_given(hints)
    wanted = hints.model_dump(exclude_none=True, by_alias=True) if given and hints else {"minSize": "4GiB"}
    return f"no disk matches rootDeviceHints {wanted}; candidates: {describe(disks)}"


def inventory_problem(hints: RootDeviceHints | None, disks: list[Storage]) -> str | None:
    """spec.rootDeviceHints against what inspection found; None when they match or cannot be judged."""
    if not hints_given(hints) or not disks or hints is None:
        return None
    if any(matches(d, hints) for d in disks):
        return None
    return "spec.rootDeviceHints: " + no_match_message(disks, hints) + "; fix the hints (no disk was touched)"
