"""Hardware RAID through Redfish Storage and Volumes (sushy), as Ironic's redfish RAID interface
builds it: a host's existing volumes on the chosen controller are deleted, then each of
spec.raid's hardwareRAIDVolumes is created on the drives metal3's fields pick.

Drive choice: `physicalDisks` by drive Id or Name; otherwise the first free drives (matching
`rotational` when given: HDD is rotational), as many as `numberOfPhysicalDisks` or the level's
minimum. Size: `sizeGibibytes`, or (0 / unset) the largest the drives give, which the BMC works out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sushy import exceptions as sx

from metalflow.api.errors import ErrorName, permanent
from metalflow.api.metal3_fields import HardwareRAIDVolume

GIB = 1 << 30
REDFISH_TYPE = {
    "0": "RAID0",
    "1": "RAID1",
    "2": "RAID2",
    "5": "RAID5",
    "6": "RAID6",
    "1+0": "RAID10",
    "5+0": "RAID50",
    "6+0": "RAID60",
}
MIN_DISKS = {"0": 1, "1": 2, "2": 3, "5": 3, "6": 4, "1+0": 4, "5+0": 6, "6+0": 8}


def _types(storage: Any) -> set[str]:
    out: set[str] = set()
    for controller in storage.storage_controllers or []:
        out |= {getattr(t, "value", str(t)) for t in controller.raid_types or []}
    return out


def _names(storage: Any) -> set[str]:
    names = {str(storage.identity)}
    for controller in storage.storage_controllers or []:
        names |= {str(controller.name or ""), str(controller.member_id or "")}
    return names - {""}


def _pick_storage(storages: list[Any], volume: HardwareRAIDVolume, i: int, where: str) -> Any:
    wanted = REDFISH_TYPE[volume.level]
    for storage in storages:
        if volume.controller and volume.controller not in _names(storage):
            continue
        if wanted in _types(storage):
            return storage
    have = "; ".join(f"{s.identity}: {', '.join(sorted(_types(s))) or 'no RAID'}" for s in storages) or "none"
    raise permanent(
        ErrorName.RAID_CONFIG,
        f"spec.raid.hardwareRAIDVolumes[{i}]: {where} has no RAID controller"
        f"{f' named {volume.controller!r}' if volume.controller else ''} that builds {wanted} "
        f"(controllers: {have}); change the level or the controller",
    )


def _rotational(drive: Any) -> bool | None:
    media = str(getattr(drive.media_type, "value", drive.media_type) or "")
    return {"HDD": True, "SSD": False}.get(media)


def _pick_drives(storage: Any, volume: HardwareRAIDVolume, used: set[str], i: int) -> list[Any]:
    drives = list(storage.drives or [])
    if volume.physical_disks:
        chosen = []
        for name in volume.physical_disks:
            match = [d for d in drives if name in (d.identity, d.name)]
            if not match:
                known = ", ".join(str(d.identity) for d in drives)
                raise permanent(
                    ErrorName.RAID_CONFIG,
                    f"spec.raid.hardwareRAIDVolumes[{i}].physicalDisks: no drive {name!r} on "
                    f"{storage.identity} (it has {known}); name one of those",
                )
            chosen.append(match[0])
        return chosen
    count = volume.number_of_physical_disks or MIN_DISKS[volume.level]
    free = [
        d
        for d in drives
        if d.path not in used and (volume.rotational is None or _rotational(d) == volume.rotational)
    ]
    if len(free) < count:
        kind = (
            {True: " rotational", False: " solid-state"}.get(volume.rotational, "")
            if volume.rotational is not None
            else ""
        )
        raise permanent(
            ErrorName.RAID_CONFIG,
            f"spec.raid.hardwareRAIDVolumes[{i}]: RAID {volume.level} needs {count}{kind} drives, "
            f"{storage.identity} has {len(free)} free; lower numberOfPhysicalDisks or the level",
        )
    return free[:count]


def configure(system: Any, volumes: Sequence[Mapping[str, Any]], where: str) -> list[str]:
    """Delete the controllers' volumes, create the requested ones; what was created, one line each."""
    wanted = [HardwareRAIDVolume.model_validate(v) for v in volumes]
    try:
        storages = list(system.storage.get_members())
    except sx.MissingAttributeError:
        storages = []
    if not storages:
        raise permanent(
            ErrorName.BMC_UNSUPPORTED,
            f"RAID configuration is not supported by {where}: it reports no Storage; remove spec.raid",
        )
    # every volume's controller and drives are picked before anything is deleted (the drives of
    # the volumes about to go count as free): a plan that cannot be built touches nothing
    chosen = [_pick_storage(storages, v, i, where) for i, v in enumerate(wanted)]
    used: set[str] = set()
    plan = []
    for i, (volume, storage) in enumerate(zip(wanted, chosen, strict=True)):
        drives = _pick_drives(storage, volume, used, i)
        used |= {d.path for d in drives}
        plan.append((volume, storage, drives))
    for storage in {id(s): s for s in chosen}.values():
        for old in storage.volumes.get_members():
            old.delete()
    made = []
    for i, (volume, storage, drives) in enumerate(plan):
        payload: dict[str, Any] = {
            "RAIDType": REDFISH_TYPE[volume.level],
            "Links": {"Drives": [{"@odata.id": d.path} for d in drives]},
        }
        if volume.name:
            payload["Name"] = volume.name
        if volume.size_gibibytes:
            payload["CapacityBytes"] = volume.size_gibibytes * GIB
        try:
            storage.volumes.create(payload)
        except sx.BadRequestError as err:
            raise permanent(
                ErrorName.RAID_CONFIG,
                f"spec.raid.hardwareRAIDVolumes[{i}]: {where} refused the volume: {err.detail or err}",
            ) from None
        on = ", ".join(str(d.identity) for d in drives)
        made.append(f"{volume.name or f'volume {i}'}: {payload['RAIDType']} on {on}")
    return made
