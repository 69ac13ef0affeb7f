"""metal3's softwareRAIDVolumes planned against a host's disks (Storage), as inspection reports them.

One planner for both sides: the workflows check the spec against the inventory before cleaning
or deploying touches a disk, and the agent builds exactly the plan (activities/agent/softraid.py).
Every holder disk is partitioned alike: the EFI System Partition first (firmware cannot read an
md array), then one partition per volume; volume i is an md array over partition i+2 of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from metalflow.api.metal3_fields import SoftwareRAIDVolume
from metalflow.api.models import Storage
from metalflow.api.root_device import GIB, describe, matches

MIB = 1 << 20
ESP_BYTES = 512 * MIB  # room for what distributions put in their ESP (Ironic's agent makes 550 MB)
GPT_OVERHEAD = 2 * MIB  # the primary table with 1 MiB alignment at the start, the backup at the end


class SoftwareRAIDPlanError(ValueError):
    """The volumes cannot be built on these disks; the message names the field and the fix."""


@dataclass(frozen=True)
class SoftwareRAIDPlan:
    holders: tuple[str, ...]  # disk names, each partitioned alike
    volumes: tuple[SoftwareRAIDVolume, ...]
    sizes: tuple[int | None, ...]  # each volume's partition on every holder, bytes; None: the rest
    root: int  # the volume the image goes to: rootVolume's, else the first


def _holders(disks: Sequence[Storage], volumes: Sequence[SoftwareRAIDVolume]) -> tuple[str, ...]:
    """The disks physicalDisks names (the same for every volume), or every disk when none does."""
    named = [v.physical_disks for v in volumes if v.physical_disks]
    if not named:
        if len(disks) < 2:
            raise SoftwareRAIDPlanError(
                "spec.raid.softwareRAIDVolumes: software RAID needs at least two disks; this host has "
                + (describe(list(disks)) or "none")
            )
        return tuple(sorted(d.name for d in disks))
    first = named[0]
    if len(named) != len(volumes) or any(hints != first for hints in named[1:]):
        raise SoftwareRAIDPlanError(
            "spec.raid.softwareRAIDVolumes[*].physicalDisks: every volume must name the same disks "
            "(or none): metalflow partitions the holder disks alike"
        )
    chosen: list[str] = []
    for i, hints in enumerate(first):
        found = sorted(d.name for d in disks if matches(d, hints) and d.name not in chosen)
        if not found:
            wanted = hints.model_dump(mode="json", by_alias=True, exclude_none=True)
            raise SoftwareRAIDPlanError(
                f"spec.raid.softwareRAIDVolumes[0].physicalDisks[{i}]: no other disk matches {wanted}; "
                f"disks: {describe(list(disks))}"
            )
        chosen.append(found[0])
    return tuple(chosen)


def plan(disks: Sequence[Storage], volumes: Sequence[SoftwareRAIDVolume]) -> SoftwareRAIDPlan:
    """What the agent will build on DISKS, or SoftwareRAIDPlanError before anything is touched."""
    if not volumes or len(volumes) > 2:
        raise SoftwareRAIDPlanError("spec.raid.softwareRAIDVolumes: metal3 allows one or two volumes")
    holders = _holders(disks, volumes)
    sizes: list[int | None] = []
    for i, volume in enumerate(volumes):
        if volume.size_gibibytes:
            sizes.append(volume.size_gibibytes * GIB)
        elif i == len(volumes) - 1:
            sizes.append(None)
        else:
            raise SoftwareRAIDPlanError(
                f"spec.raid.softwareRAIDVolumes[{i}].sizeGibibytes: only the last volume may take the "
                "rest of the disks; give this one a size"
            )
    by_name = {d.name: d for d in disks}
    smallest = min((by_name[h] for h in holders), key=lambda d: d.size_bytes)
    needed = ESP_BYTES + GPT_OVERHEAD + sum(s for s in sizes if s) + (MIB if None in sizes else 0)
    if needed > smallest.size_bytes:
        raise SoftwareRAIDPlanError(
            f"spec.raid.softwareRAIDVolumes[*].sizeGibibytes: the volumes need {needed / GIB:.2f} GiB "
            f"on every holder (with a {ESP_BYTES // MIB} MiB ESP) but {smallest.name} has "
            f"{smallest.size_bytes / GIB:.2f} GiB; ask for less"
        )
    roots = [i for i, v in enumerate(volumes) if v.root_volume]
    return SoftwareRAIDPlan(holders, tuple(volumes), tuple(sizes), roots[0] if roots else 0)


def inventory_problem(volumes: Sequence[SoftwareRAIDVolume] | None, disks: Sequence[Storage]) -> str | None:
    """Why VOLUMES cannot be built on the inspected DISKS, or None (also when nothing is asked)."""
    if not volumes or not disks:
        return None
    try:
        plan(disks, volumes)
    except SoftwareRAIDPlanError as err:
        return str(err)
    return None
