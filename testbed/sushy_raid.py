"""A hardware RAID controller on every fake system of the test bed's sushy-emulator.

Installed by testbed.sushy_uefihttp's main(), after testbed.sushy_bios (its fake driver is the base).

sushy-tools 2.2 serves Storage, Drives and Volumes only from its config (SUSHY_EMULATOR_STORAGE,
_DRIVES, _VOLUMES, which the test bed sets for no system), and its Volumes POST calls a driver
method (`find_or_create_storage_volume`) the fake driver lacks; there is no RAID type, no drive
link and no DELETE. metalflow configures RAID as Ironic's redfish RAID interface does: it reads
each Storage's SupportedRAIDTypes, Drives and Volumes, deletes volumes, POSTs new ones naming a
RAIDType and drives, and reads them back. So each fake system gets a Dell-like controller:

- Storage `RAID.Integrated.1-1` ("PERC emulated": RAID0, RAID1, RAID5, RAID10) with four drives,
  `Disk.Bay.0`-`1` (480 GiB SSD) and `Disk.Bay.2`-`3` (1.2 TB HDD), served in Redfish's shapes.
- Volumes live in the system's record (`raid_volumes`, beside testbed.sushy_bios' BIOS keys), so
  they survive an emulator restart. `RaidFakeDriver._update` keeps them when another write (a
  power change landing on a read, a BIOS PATCH) stores a record read before a volume changed.
- POST Volumes checks what a controller would (RAIDType offered, drive count for the level, the
  drives this storage's and free, CapacityBytes at most what the level gives) and answers 400 with
  a Redfish error, or 201 with `Location`; the volume is there at once (the collection advertises
  `Immediate` apply time only). DELETE frees the drives (204); an unknown volume is 404.
- Each create and delete is logged (`metalflow-testbed: Volume create|delete <uuid> ...` on
  stderr, the emulator's log) so tests can count what reached the BMC; refused POSTs show only
  in werkzeug's request lines.

Systems whose storage the config does give, and other drivers (libvirt), keep sushy-tools' views.
Upstream views are wrapped and the driver subclassed, never copied.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import flask
from sushy_tools.emulator import api_utils
from sushy_tools.emulator import main as emulator
from sushy_tools.emulator.resources.systems import fakedriver
from werkzeug import exceptions as wz_exc

from testbed import sushy_bios

STORAGE_ID = "RAID.Integrated.1-1"
CONTROLLER_NAME = "PERC emulated"
GIB = 1 << 30

# The fake driver's system record: {storage id: [{Id, Name, RAIDType, CapacityBytes, Drives: [drive id]}]}
VOLUMES_KEY = "raid_volumes"

APPLY_TIME = "@Redfish.OperationApplyTime"
IMMEDIATE = "Immediate"


@dataclass(frozen=True)
class Drive:
    id: str
    name: str
    capacity_bytes: int
    media_type: str  # Redfish MediaType: "SSD" or "HDD"


DRIVES: tuple[Drive, ...] = (
    Drive("Disk.Bay.0", "Physical Disk 0:1:0", 480 * GIB, "SSD"),
    Drive("Disk.Bay.1", "Physical Disk 0:1:1", 480 * GIB, "SSD"),
    Drive("Disk.Bay.2", "Physical Disk 0:1:2", 1_200_000_000_000, "HDD"),
    Drive("Disk.Bay.3", "Physical Disk 0:1:3", 1_200_000_000_000, "HDD"),
)
DRIVES_BY_ID = {d.id: d for d in DRIVES}


@dataclass(frozen=True)
class Level:
    """One RAID level: which drive counts it takes and how much of them it gives."""

    volume_type: str  # Redfish VolumeType, which older clients read instead of RAIDType
    min_drives: int
    exact: bool = False  # exactly min_drives
    even: bool = False

    def count_problem(self, raid_type: str, n: int) -> str | None:
        if self.exact and n != self.min_drives:
            return f"{raid_type} takes exactly {self.min_drives} drives, not {n}."
        if n < self.min_drives:
            return f"{raid_type} takes at least {self.min_drives} drives, not {n}."
        if self.even and n % 2:
            return f"{raid_type} takes an even number of drives, not {n}."
        return None


LEVELS: dict[str, Level] = {
    "RAID0": Level("NonRedundant", 1),
    "RAID1": Level("Mirrored", 2, exact=True),
    "RAID5": Level("StripedWithParity", 3),
    "RAID10": Level("SpannedMirrors", 4, even=True),
}


def max_capacity(raid_type: str, sizes: Sequence[int]) -> int:
    """The largest volume the level makes of drives of these sizes (their count already checked)."""
    n, smallest = len(sizes), min(sizes)
    if raid_type == "RAID0":
        return sum(sizes)
    if raid_type == "RAID1":
        return smallest
    if raid_type == "RAID5":
        return (n - 1) * smallest
    if raid_type == "RAID10":
        return n // 2 * smallest
    raise ValueError(f"no RAID level {raid_type}")


# --- the request check -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One reason to refuse a volume, as a Redfish Base message."""

    message_id: str  # e.g. "PropertyValueNotInList" (Base.1.0.<message_id>)
    message: str
    prop: str  # the request's property, as a JSON pointer
    args: tuple[str, ...] = ()

    def extended_info(self) -> dict[str, Any]:
        return {
            "@odata.type": "#Message.v1_0_0.Message",
            "MessageId": f"Base.1.0.{self.message_id}",
            "Message": self.message,
            "MessageArgs": list(self.args),
            "RelatedProperties": [f"#/{self.prop}"],
            "Severity": "Warning",
            "Resolution": "Correct the request and resubmit it.",
        }


def redfish_error(problems: Sequence[Problem]) -> dict[str, Any]:
    first = problems[0]
    message = first.message if len(problems) == 1 else "See @Message.ExtendedInfo for more information."
    return {
        "error": {
            "code": f"Base.1.0.{first.message_id}",
            "message": message,
            "@Message.ExtendedInfo": [p.extended_info() for p in problems],
        }
    }


@dataclass(frozen=True)
class VolumeRequest:
    """A POST that passed every check needing no state (whether its drives are free does)."""

    name: str | None
    raid_type: str
    capacity_bytes: int  # what was asked, or the largest
    drives: tuple[str, ...]  # drive ids, in the request's order


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _drive_ids(links: Any, drive_of: Callable[[str], str | None]) -> tuple[list[str] | None, list[Problem]]:
    if not isinstance(links, dict) or "Drives" not in links:
        return None, [
            Problem("PropertyMissing", "The property Links/Drives is a required property.", "Links")
        ]
    refs = links["Drives"]
    if not isinstance(refs, list) or not all(
        isinstance(r, dict) and isinstance(r.get("@odata.id"), str) for r in refs
    ):
        message = 'Links/Drives must be a list of {"@odata.id": drive URI}.'
        return None, [Problem("PropertyValueTypeError", message, "Links/Drives")]
    ids: list[str] = []
    problems: list[Problem] = []
    for i, ref in enumerate(refs):
        uri = ref["@odata.id"]
        drive = drive_of(uri)
        if drive is None:
            message = f"The drive {uri} is not a drive of storage {STORAGE_ID}."
            problems.append(Problem("PropertyValueNotInList", message, f"Links/Drives/{i}", (uri, "Drives")))
        elif drive in ids:
            message = f"The drive {uri} is listed twice."
            problems.append(Problem("ActionParameterValueError", message, f"Links/Drives/{i}", (uri,)))
        else:
            ids.append(drive)
    return (None if problems else ids), problems


def check_volume(
    body: Any, raid_types: Sequence[str], drive_of: Callable[[str], str | None]
) -> VolumeRequest | list[Problem]:
    """What a controller refuses in a volume create, `drive_of` naming the drive id a URI refers
    to (None: not this storage's); the request, or every problem found."""
    if not isinstance(body, dict):
        return [Problem("MalformedJSON", "The request body is not a JSON object.", "")]
    problems: list[Problem] = []
    name = body.get("Name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        problems.append(Problem("PropertyValueTypeError", "Name must be a non-empty string.", "Name"))
    raid_type = body.get("RAIDType")
    level = LEVELS.get(raid_type) if isinstance(raid_type, str) and raid_type in raid_types else None
    if raid_type is None:
        problems.append(
            Problem("PropertyMissing", "The property RAIDType is a required property.", "RAIDType")
        )
    elif level is None:
        message = (
            f"The value {json.dumps(raid_type)} for the property RAIDType is not in the list of acceptable"
            f" values ({', '.join(raid_types)})."
        )
        problems.append(Problem("PropertyValueNotInList", message, "RAIDType", (str(raid_type), "RAIDType")))
    volume_type = body.get("VolumeType")
    if level is not None and volume_type is not None and volume_type != level.volume_type:
        message = f"VolumeType {json.dumps(volume_type)} is not {raid_type}'s ({level.volume_type})."
        problems.append(
            Problem("PropertyValueNotInList", message, "VolumeType", (str(volume_type), "VolumeType"))
        )
    if body.get("Encrypted") not in (None, False):
        message = "The controller has no encryption: Encrypted can only be false."
        problems.append(Problem("PropertyValueNotInList", message, "Encrypted", (str(body["Encrypted"]),)))
    apply_time = body.get(APPLY_TIME)
    if apply_time not in (None, IMMEDIATE):
        message = f"{APPLY_TIME} {json.dumps(apply_time)} is not supported: volumes apply {IMMEDIATE}."
        problems.append(Problem("PropertyValueNotInList", message, APPLY_TIME, (str(apply_time),)))
    capacity = body.get("CapacityBytes")
    if capacity is not None and not (_int(capacity) and capacity > 0):
        message = "CapacityBytes must be a positive integer."
        problems.append(Problem("PropertyValueTypeError", message, "CapacityBytes", (str(capacity),)))
    drives, drive_problems = _drive_ids(body.get("Links"), drive_of)
    problems += drive_problems
    if level is None or drives is None:
        return problems
    raid, asked = str(raid_type), capacity if _int(capacity) else None
    count = level.count_problem(raid, len(drives))
    if count:
        problems.append(Problem("ActionParameterValueError", count, "Links/Drives", (str(len(drives)), raid)))
        return problems
    largest = max_capacity(raid, [DRIVES_BY_ID[d].capacity_bytes for d in drives])
    if asked is not None and asked > largest:
        message = f"CapacityBytes {asked} is more than {raid} of these drives gives ({largest})."
        problems.append(
            Problem("ActionParameterValueError", message, "CapacityBytes", (str(asked), str(largest)))
        )
    if problems:
        return problems
    return VolumeRequest(name, raid, asked or largest, tuple(drives))


# --- the driver ------------------------------------------------------------------------------------

_lock = threading.RLock()  # every write of a fake system's record (one emulator process)
_local = threading.local()  # .queue: the external notifications held by this thread's outermost lock


def volume_id(n: int) -> str:
    return f"Disk.Virtual.{n}:{STORAGE_ID}"


class RaidFakeDriver(sushy_bios.BiosFakeDriver):  # type: ignore[misc]
    """The test bed's fake driver (BIOS) with RAID volumes in each system's record."""

    def get_volumes(self, identity: str, storage_id: str = STORAGE_ID) -> list[dict[str, Any]]:
        return [dict(v) for v in (self._get(identity).get(VOLUMES_KEY) or {}).get(storage_id, [])]

    def create_volume(
        self, identity: str, request: VolumeRequest, storage_id: str = STORAGE_ID
    ) -> dict[str, Any] | list[Problem]:
        """The stored volume, or why not: drives already in a volume are refused. Checked and
        written under the lock, so two POSTs cannot both take a drive."""
        with self._writing():
            system = self._get(identity)
            volumes = copy.deepcopy(system.get(VOLUMES_KEY) or {})
            existing = volumes.setdefault(storage_id, [])
            used = {d: v["Id"] for v in existing for d in v["Drives"]}
            busy = [
                Problem(
                    "ResourceInUse",
                    f"The drive {d} is already in volume {used[d]}.",
                    f"Links/Drives/{i}",
                    (d, used[d]),
                )
                for i, d in enumerate(request.drives)
                if d in used
            ]
            if busy:
                return busy
            taken = {v["Id"] for v in existing}
            n = next(i for i in range(len(existing) + 1) if volume_id(i) not in taken)  # as a PERC reuses
            volume = {
                "Id": volume_id(n),
                "Name": request.name or f"Virtual Disk {n}",
                "RAIDType": request.raid_type,
                "CapacityBytes": request.capacity_bytes,
                "Drives": list(request.drives),
            }
            existing.append(volume)
            self._update(system, **{VOLUMES_KEY: volumes})
            return dict(volume)

    def delete_volume(self, identity: str, volume: str, storage_id: str = STORAGE_ID) -> bool:
        """False if there is no such volume."""
        with self._writing():
            system = self._get(identity)
            volumes = copy.deepcopy(system.get(VOLUMES_KEY) or {})
            existing = volumes.get(storage_id, [])
            kept = [v for v in existing if v["Id"] != volume]
            if len(kept) == len(existing):
                return False
            volumes[storage_id] = kept
            self._update(system, **{VOLUMES_KEY: volumes})
            return True

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The record lock (re-entrant). The external notifications of the writes made under it
        (HTTP PUTs, whose receiver may read the emulator back, which can write) are sent once the
        thread's outermost hold ends, with the lock released."""
        queue: list[Any] = []
        outer = False
        try:
            with _lock:
                outer = getattr(_local, "queue", None) is None
                if outer:
                    _local.queue = queue
                try:
                    yield
                finally:
                    if outer:
                        _local.queue = None
        finally:
            for system in queue:
                super()._send_external_notification(system)

    def _send_external_notification(self, system: Any) -> None:
        queue = getattr(_local, "queue", None)
        if queue is None:
            super()._send_external_notification(system)
        else:
            queue.append(copy.deepcopy(system))

    def _update(self, system: Any, **changes: Any) -> None:
        """Every record write keeps the stored volumes unless it changes them: a power change
        landing on a read, or a BIOS PATCH, writes back the whole record it read, which may
        predate a volume's create or delete."""
        with self._writing():
            if isinstance(system, dict) and VOLUMES_KEY not in changes:
                try:
                    stored = self._systems[system["uuid"]]
                except KeyError:
                    stored = {}
                if VOLUMES_KEY in stored:
                    system[VOLUMES_KEY] = stored[VOLUMES_KEY]
                else:
                    system.pop(VOLUMES_KEY, None)
            super()._update(system, **changes)


# --- the resources ---------------------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> flask.Response:
    return flask.Response(
        json.dumps(body, indent=2),
        status=status,
        headers=dict(headers or {}),
        content_type="application/json",
    )


def _not_found(uri: str) -> flask.Response:
    message = f"The resource at the URI {uri} was not found."
    info = {
        "@odata.type": "#Message.v1_0_0.Message",
        "MessageId": "Base.1.0.ResourceMissingAtURI",
        "Message": message,
        "MessageArgs": [uri],
        "Severity": "Critical",
    }
    body = {
        "error": {
            "code": "Base.1.0.ResourceMissingAtURI",
            "message": message,
            "@Message.ExtendedInfo": [info],
        }
    }
    return _json(body, 404)


def _status() -> dict[str, str]:
    return {"State": "Enabled", "Health": "OK"}


class Uris:
    """The URIs of one system's controller, under the system's id as the request named it."""

    def __init__(self, identity: str):
        self.system = f"/redfish/v1/Systems/{identity}"
        self.collection = f"{self.system}/Storage"
        self.storage = f"{self.collection}/{STORAGE_ID}"
        self.volumes = f"{self.storage}/Volumes"

    def drive(self, drive_id: str) -> str:
        return f"{self.storage}/Drives/{drive_id}"

    def volume(self, volume: str) -> str:
        return f"{self.volumes}/{volume}"


def storage_collection_body(uris: Uris) -> dict[str, Any]:
    return {
        "@odata.id": uris.collection,
        "@odata.type": "#StorageCollection.StorageCollection",
        "Name": "Storage Collection",
        "Members": [{"@odata.id": uris.storage}],
        "Members@odata.count": 1,
    }


def storage_body(uris: Uris) -> dict[str, Any]:
    return {
        "@odata.id": uris.storage,
        "@odata.type": "#Storage.v1_8_0.Storage",
        "Id": STORAGE_ID,
        "Name": CONTROLLER_NAME,
        "Status": {**_status(), "HealthRollup": "OK"},
        "StorageControllers": [
            {
                "@odata.id": f"{uris.storage}#/StorageControllers/0",
                "MemberId": "0",
                "Name": CONTROLLER_NAME,
                "Status": _status(),
                "Manufacturer": "metalflow test bed",
                "Model": "PERC emulated",
                "FirmwareVersion": "51.16.0-4076",
                "SpeedGbps": 12,
                "SupportedControllerProtocols": ["PCIe"],
                "SupportedDeviceProtocols": ["SAS", "SATA"],
                "SupportedRAIDTypes": list(LEVELS),
            }
        ],
        "Drives": [{"@odata.id": uris.drive(d.id)} for d in DRIVES],
        "Drives@odata.count": len(DRIVES),
        "Volumes": {"@odata.id": uris.volumes},
    }


def drive_body(uris: Uris, uuid: str, drive: Drive, volumes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    bay = drive.id.rsplit(".", 1)[-1]
    body: dict[str, Any] = {
        "@odata.id": uris.drive(drive.id),
        "@odata.type": "#Drive.v1_9_0.Drive",
        "Id": drive.id,
        "Name": drive.name,
        "CapacityBytes": drive.capacity_bytes,
        "MediaType": drive.media_type,
        "Protocol": "SAS",
        "BlockSizeBytes": 512,
        "Manufacturer": "metalflow test bed",
        "Model": f"Emulated {drive.media_type} {drive.capacity_bytes // 10**9} GB",
        "SerialNumber": f"MF{hashlib.sha1(uuid.encode()).hexdigest()[:10].upper()}{bay}",  # per system
        "Status": _status(),
        "Links": {
            "Volumes": [{"@odata.id": uris.volume(v["Id"])} for v in volumes if drive.id in v["Drives"]]
        },
    }
    if drive.media_type == "HDD":
        body["RotationSpeedRPM"] = 10000
    return body


def volume_body(uris: Uris, volume: Mapping[str, Any]) -> dict[str, Any]:
    drives = [{"@odata.id": uris.drive(d)} for d in volume["Drives"]]
    return {
        "@odata.id": uris.volume(volume["Id"]),
        "@odata.type": "#Volume.v1_6_2.Volume",
        "Id": volume["Id"],
        "Name": volume["Name"],
        "RAIDType": volume["RAIDType"],
        "VolumeType": LEVELS[volume["RAIDType"]].volume_type,
        "CapacityBytes": volume["CapacityBytes"],
        "BlockSizeBytes": 512,
        "Encrypted": False,
        "Status": _status(),
        "Links": {"Drives": drives, "Drives@odata.count": len(drives)},
    }


def volumes_body(uris: Uris, volumes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "@odata.id": uris.volumes,
        "@odata.type": "#VolumeCollection.VolumeCollection",
        "Name": "Storage Volume Collection",
        "Members": [{"@odata.id": uris.volume(v["Id"])} for v in volumes],
        "Members@odata.count": len(volumes),
        "@Redfish.OperationApplyTimeSupport": {
            "@odata.type": "#Settings.v1_3_3.OperationApplyTimeSupport",
            "SupportedValues": [IMMEDIATE],
        },
    }


_DRIVE_PATH = re.compile(r"/redfish/v1/Systems/([^/]+)/Storage/([^/]+)/Drives/([^/]+)/?")


def drive_resolver(identity: str, uuid: str) -> Callable[[str], str | None]:
    """A drive URI (a path, or a URL with one) to the id of this controller's drive, else None."""

    def drive_of(uri: str) -> str | None:
        match = _DRIVE_PATH.fullmatch(urlparse(uri).path)
        if not match or match[1] not in (identity, uuid) or match[2] != STORAGE_ID:
            return None
        return match[3] if match[3] in DRIVES_BY_ID else None

    return drive_of


# --- the views -------------------------------------------------------------------------------------


def _raid_driver(identity: str) -> RaidFakeDriver | None:
    """The driver when this module serves the system's storage: the fake driver, the full feature
    set, access allowed, no config-backed storage for the system. An unknown system raises
    sushy-tools' NotFound (its error handler answers 404)."""
    app = emulator.app
    if app.feature_set != "full" or api_utils.instance_denied(identity=identity):
        return None
    systems = app.systems
    if not isinstance(systems, RaidFakeDriver):
        return None
    if str(systems.uuid(identity)) in (app.config.get("SUSHY_EMULATOR_STORAGE") or {}):
        return None
    return systems


_log = logging.getLogger(sushy_bios.LOG_PREFIX)  # to stderr, as testbed.sushy_bios set it up


def _log_line(what: str, uuid: str, detail: str) -> None:
    _log.info("Volume %s %s %s", what, uuid, detail)


def _serve(view: Callable[..., Any], serve: Callable[..., Any]) -> Callable[..., Any]:
    """sushy-tools' view, or `serve(driver, uuid, uris, **kwargs)` for a system of ours."""

    @functools.wraps(view)
    def handler(identity: str, **kwargs: Any) -> Any:
        driver = _raid_driver(identity)
        if driver is None:
            return view(identity=identity, **kwargs)  # by name: its ensure_instance_access reads it
        return serve(driver, str(driver.uuid(identity)), Uris(identity), identity=identity, **kwargs)

    return handler


def _storage_collection(driver: RaidFakeDriver, uuid: str, uris: Uris, **_: Any) -> flask.Response:
    return _json(storage_collection_body(uris))


def _storage(driver: RaidFakeDriver, uuid: str, uris: Uris, storage_id: str, **_: Any) -> flask.Response:
    if storage_id != STORAGE_ID:
        return _not_found(f"{uris.collection}/{storage_id}")
    return _json(storage_body(uris))


def _drive(
    driver: RaidFakeDriver, uuid: str, uris: Uris, stg_id: str, drv_id: str, **_: Any
) -> flask.Response:
    drive = DRIVES_BY_ID.get(drv_id)
    if stg_id != STORAGE_ID or drive is None:
        return _not_found(f"{uris.collection}/{stg_id}/Drives/{drv_id}")
    return _json(drive_body(uris, uuid, drive, driver.get_volumes(uuid)))


def _volumes(
    driver: RaidFakeDriver, uuid: str, uris: Uris, storage_id: str, identity: str, **_: Any
) -> flask.Response:
    if storage_id != STORAGE_ID:
        return _not_found(f"{uris.collection}/{storage_id}/Volumes")
    if flask.request.method == "GET":
        return _json(volumes_body(uris, driver.get_volumes(uuid)))
    checked = check_volume(flask.request.get_json(silent=True), list(LEVELS), drive_resolver(identity, uuid))
    result = checked if isinstance(checked, list) else driver.create_volume(uuid, checked)
    if isinstance(result, list):
        return _json(redfish_error(result), 400)
    logged = {k: result[k] for k in ("Name", "RAIDType", "CapacityBytes", "Drives")}
    _log_line("create", uuid, json.dumps(logged, sort_keys=True, separators=(",", ":")))
    uri = uris.volume(result["Id"])
    return _json(volume_body(uris, result), 201, {"Location": uri})


def _volume(
    driver: RaidFakeDriver, uuid: str, uris: Uris, stg_id: str, vol_id: str, **_: Any
) -> flask.Response:
    uri = f"{uris.collection}/{stg_id}/Volumes/{vol_id}"
    found = driver.get_volumes(uuid) if stg_id == STORAGE_ID else []
    volume = next((v for v in found if v["Id"] == vol_id), None)
    if volume is None:
        return _not_found(uri)
    return _json(volume_body(uris, volume))


def _delete_volume(
    driver: RaidFakeDriver, uuid: str, uris: Uris, stg_id: str, vol_id: str, **_: Any
) -> flask.Response:
    body = flask.request.get_json(silent=True)
    apply_time = body.get(APPLY_TIME) if isinstance(body, dict) else None
    if apply_time not in (None, IMMEDIATE):
        message = f"{APPLY_TIME} {json.dumps(apply_time)} is not supported: volumes apply {IMMEDIATE}."
        return _json(redfish_error([Problem("PropertyValueNotInList", message, APPLY_TIME)]), 400)
    if stg_id != STORAGE_ID or not driver.delete_volume(uuid, vol_id):
        return _not_found(f"{uris.collection}/{stg_id}/Volumes/{vol_id}")
    _log_line("delete", uuid, vol_id)
    return flask.Response(status=204)


def _no_delete(identity: str, **_: Any) -> Any:
    """What sushy-tools answered a DELETE before this rule existed: 405."""
    raise wz_exc.MethodNotAllowed(valid_methods=["GET"])


VIEWS: dict[
    str, Callable[..., flask.Response]
] = {  # sushy-tools' endpoints (Flask view names) and what serves them for a system of ours
    "storage_collection": _storage_collection,
    "storage": _storage,
    "drive_resource": _drive,
    "volumes_collection": _volumes,
    "volume": _volume,
}
VOLUME_RULE = "/redfish/v1/Systems/<identity>/Storage/<stg_id>/Volumes/<vol_id>"
_installed = False


def install() -> None:
    """Make the emulator instantiate RaidFakeDriver and serve the storage views (once, before it
    serves); installs testbed.sushy_bios first, whose fake driver this one derives from."""
    global _installed
    if _installed:
        return
    _installed = True
    sushy_bios.install()
    fakedriver.FakeDriver = RaidFakeDriver  # what the emulator's `systems` instantiates
    app = emulator.app
    views = app.view_functions
    for name, serve in VIEWS.items():
        views[name] = _serve(views[name], serve)
    # sushy-tools' rule for a volume is GET only: werkzeug tries this one for a DELETE
    app.add_url_rule(
        VOLUME_RULE,
        "metalflow_volume_delete",
        _serve(_no_delete, _delete_volume),
        methods=["DELETE"],
    )
