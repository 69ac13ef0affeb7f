"""The test bed's RAID controller (testbed/sushy_raid.py) behaves like a real BMC's: every fake
system has Storage RAID.Integrated.1-1 with four drives; a volume POST is checked as a controller
would (RAID type, drive count, drives free and this storage's, capacity) and answered 201 or 400;
DELETE frees the drives; volumes live in the system's record across an emulator restart; each
create and delete is logged. Against the real emulator (fake driver), in plain HTTP and through
sushy, the library metalflow's Redfish client (and Ironic's RAID interface) uses."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sushy

from testbed import sushy as testbed_sushy
from testbed.processes import wait_for
from testbed.sushy import FakeSystem, SushyEmulator, start_sushy
from testbed.sushy_raid import (
    LEVELS,
    STORAGE_ID,
    VOLUMES_KEY,
    RaidFakeDriver,
    VolumeRequest,
    check_volume,
    max_capacity,
)

AUTH = ("admin", "raid-pw")
GIB = 1 << 30
SSD, HDD = 480 * GIB, 1_200_000_000_000
BAYS = [f"Disk.Bay.{n}" for n in range(4)]


def _system(n: int) -> FakeSystem:
    return FakeSystem(f"0f2b2e1c-0000-4000-8000-0000000003{n:02x}", f"raid-{n}", f"52:54:00:aa:03:{n:02x}")


SYSTEMS = [_system(n) for n in range(12)]


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SushyEmulator]:
    """One emulator for the module; each test takes its own system."""
    e = start_sushy(tmp_path_factory.mktemp("sushy-raid"), SYSTEMS, *AUTH, power_delay=(1, 1))
    yield e
    e.stop()


class Bmc:
    """Plain-HTTP reads and writes of one system's controller."""

    def __init__(self, emu: SushyEmulator, system: FakeSystem):
        self.emu, self.uuid, self.url = emu, system.uuid, emu.system_url(system.uuid)
        self.path = f"/redfish/v1/Systems/{system.uuid}"
        self.storage = f"{self.path}/Storage/{STORAGE_ID}"

    def get(self, path: str) -> dict[str, Any]:
        r = requests.get(self.emu.url + path, auth=AUTH, timeout=10)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def drive(self, n: int) -> dict[str, str]:
        return {"@odata.id": f"{self.storage}/Drives/Disk.Bay.{n}"}

    def create(self, raid_type: str, *bays: int, **extra: Any) -> requests.Response:
        body = {"RAIDType": raid_type, "Links": {"Drives": [self.drive(n) for n in bays]}, **extra}
        return self.post(body)

    def post(self, body: Any) -> requests.Response:
        return requests.post(self.emu.url + f"{self.storage}/Volumes", json=body, auth=AUTH, timeout=10)

    def delete(self, uri: str) -> requests.Response:
        return requests.delete(self.emu.url + uri, auth=AUTH, timeout=10)

    def volumes(self) -> list[str]:
        return [m["@odata.id"] for m in self.get(f"{self.storage}/Volumes")["Members"]]

    def drive_volumes(self, n: int) -> list[str]:
        return [v["@odata.id"] for v in self.get(self.drive(n)["@odata.id"])["Links"]["Volumes"]]

    def log_lines(self, what: str) -> list[str]:
        marker = f"metalflow-testbed: Volume {what} {self.uuid} "
        text = self.emu.process.log_path.read_text()
        return [line.split(marker, 1)[1] for line in text.splitlines() if marker in line]


def test_every_fake_system_has_the_controller_and_its_four_drives(emu: SushyEmulator) -> None:
    bmc = Bmc(emu, SYSTEMS[0])
    assert bmc.get(bmc.path)["Storage"] == {"@odata.id": f"{bmc.path}/Storage"}
    collection = bmc.get(f"{bmc.path}/Storage")
    assert collection["Members"] == [{"@odata.id": bmc.storage}] and collection["Members@odata.count"] == 1
    storage = bmc.get(bmc.storage)
    assert (storage["Id"], storage["@odata.id"]) == (STORAGE_ID, bmc.storage)
    [controller] = storage["StorageControllers"]
    assert (controller["MemberId"], controller["Name"]) == ("0", "PERC emulated")
    assert controller["SupportedRAIDTypes"] == ["RAID0", "RAID1", "RAID5", "RAID10"]
    assert storage["Drives"] == [bmc.drive(n) for n in range(4)]
    assert storage["Volumes"] == {"@odata.id": f"{bmc.storage}/Volumes"}
    drives = [bmc.get(d["@odata.id"]) for d in storage["Drives"]]
    assert [(d["Id"], d["Name"], d["CapacityBytes"], d["MediaType"], d["Protocol"]) for d in drives] == [
        ("Disk.Bay.0", "Physical Disk 0:1:0", SSD, "SSD", "SAS"),
        ("Disk.Bay.1", "Physical Disk 0:1:1", SSD, "SSD", "SAS"),
        ("Disk.Bay.2", "Physical Disk 0:1:2", HDD, "HDD", "SAS"),
        ("Disk.Bay.3", "Physical Disk 0:1:3", HDD, "HDD", "SAS"),
    ]
    assert [d["@odata.id"] for d in drives] == [d["@odata.id"] for d in storage["Drives"]]
    assert len({d["SerialNumber"] for d in drives}) == 4
    assert bmc.volumes() == []
    other = Bmc(emu, SYSTEMS[1])  # serial numbers differ between systems too
    assert other.get(other.drive(0)["@odata.id"])["SerialNumber"] != drives[0]["SerialNumber"]
    for missing in (f"{bmc.path}/Storage/RAID.Slot.1-1", f"{bmc.storage}/Drives/Disk.Bay.4"):
        r = requests.get(emu.url + missing, auth=AUTH, timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] == "Base.1.0.ResourceMissingAtURI"


def test_raid1_on_bays_0_and_1_then_raid5_on_bays_1_to_3_is_refused(emu: SushyEmulator) -> None:
    bmc = Bmc(emu, SYSTEMS[2])
    r = bmc.create("RAID1", 0, 1, Name="root")
    assert r.status_code == 201, r.text
    uri = f"{bmc.storage}/Volumes/Disk.Virtual.0:{STORAGE_ID}"
    assert r.headers["Location"] == uri and r.json()["@odata.id"] == uri
    volume = bmc.get(uri)
    assert volume == r.json()
    assert (volume["Id"], volume["Name"], volume["RAIDType"], volume["VolumeType"]) == (
        f"Disk.Virtual.0:{STORAGE_ID}",
        "root",
        "RAID1",
        "Mirrored",
    )
    assert volume["CapacityBytes"] == SSD  # none asked: the largest, one drive's
    assert volume["Links"]["Drives"] == [bmc.drive(0), bmc.drive(1)]
    assert bmc.volumes() == [uri]
    assert [bmc.drive_volumes(n) for n in range(4)] == [[uri], [uri], [], []]

    r = bmc.create("RAID5", 1, 2, 3)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "Base.1.0.ResourceInUse" and "Disk.Bay.1" in err["message"]
    assert [i["MessageId"] for i in err["@Message.ExtendedInfo"]] == ["Base.1.0.ResourceInUse"]
    assert bmc.volumes() == [uri]
    assert len(bmc.log_lines("create")) == 1


def _request(raid_type: str, *drives: int | str, **extra: Any) -> Callable[[Bmc], dict[str, Any]]:
    """A volume request on one system: a drive is a bay of its controller, or "other-system"
    (bay 3 of another system) or "other-storage" (a drive URI under another Storage id)."""

    def body(bmc: Bmc) -> dict[str, Any]:
        refs = [
            Bmc(bmc.emu, SYSTEMS[0]).drive(3)
            if d == "other-system"
            else {"@odata.id": f"{bmc.path}/Storage/RAID.Slot.1-1/Drives/Disk.Bay.2"}
            if d == "other-storage"
            else bmc.drive(int(d))
            for d in drives
        ]
        return {"RAIDType": raid_type, "Links": {"Drives": refs}, **extra}

    return body


def _raw(body: Any) -> Callable[[Bmc], Any]:
    return lambda bmc: body


NOT_IN_LIST, MISSING = "Base.1.0.PropertyValueNotInList", "Base.1.0.PropertyMissing"
VALUE, TYPE = "Base.1.0.ActionParameterValueError", "Base.1.0.PropertyValueTypeError"
INVALID: dict[str, tuple[Callable[[Bmc], Any], str]] = {
    "RAID6 not supported": (_request("RAID6", 2, 3), NOT_IN_LIST),
    "RAIDType missing": (_raw({"Links": {"Drives": []}}), MISSING),
    "RAID0 of no drive": (_request("RAID0"), VALUE),
    "RAID1 of one drive": (_request("RAID1", 0), VALUE),
    "RAID1 of three drives": (_request("RAID1", 0, 1, 2), VALUE),
    "RAID5 of two drives": (_request("RAID5", 2, 3), VALUE),
    "RAID10 of three drives": (_request("RAID10", 0, 1, 2), VALUE),
    "a drive twice": (_request("RAID1", 2, 2), VALUE),
    "no such bay": (_request("RAID1", 2, 9), NOT_IN_LIST),
    "another system's drive": (_request("RAID1", 2, "other-system"), NOT_IN_LIST),
    "another storage's drive": (_request("RAID1", 2, "other-storage"), NOT_IN_LIST),
    "RAID1 larger than a drive": (_request("RAID1", 0, 1, CapacityBytes=SSD + 1), VALUE),
    "RAID5 larger than 2 of 3": (_request("RAID5", 1, 2, 3, CapacityBytes=2 * SSD + 1), VALUE),
    "RAID10 larger than half": (_request("RAID10", 0, 1, 2, 3, CapacityBytes=2 * SSD + 1), VALUE),
    "RAID0 larger than the sum": (_request("RAID0", 2, 3, CapacityBytes=2 * HDD + 1), VALUE),
    "capacity not a number": (_request("RAID1", 0, 1, CapacityBytes="1TB"), TYPE),
    "capacity zero": (_request("RAID1", 0, 1, CapacityBytes=0), TYPE),
    "VolumeType of another level": (_request("RAID1", 0, 1, VolumeType="StripedWithParity"), NOT_IN_LIST),
    "no Links": (_raw({"RAIDType": "RAID1"}), MISSING),
    "Drives not references": (_raw({"RAIDType": "RAID1", "Links": {"Drives": ["Disk.Bay.0"]}}), TYPE),
    "not an object": (_raw([]), "Base.1.0.MalformedJSON"),
    "encrypted": (_request("RAID1", 0, 1, Encrypted=True), NOT_IN_LIST),
    "applied on reset": (_request("RAID1", 0, 1, **{"@Redfish.OperationApplyTime": "OnReset"}), NOT_IN_LIST),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_volume_is_refused_and_nothing_is_created(emu: SushyEmulator, case: str) -> None:
    bmc = Bmc(emu, SYSTEMS[3])
    request, code = INVALID[case]
    r = bmc.post(request(bmc))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    info = err["@Message.ExtendedInfo"]
    assert info[0]["MessageId"] == code and info[0]["Message"] and err["message"]
    assert bmc.volumes() == []
    assert [bmc.drive_volumes(n) for n in range(4)] == [[], [], [], []]
    assert bmc.log_lines("create") == []


@pytest.mark.parametrize(
    ("raid_type", "bays", "largest"),
    [("RAID0", (2, 3), 2 * HDD), ("RAID5", (1, 2, 3), 2 * SSD), ("RAID10", (0, 1, 2, 3), 2 * SSD)],
)
def test_each_level_gives_its_capacity_and_takes_less(
    emu: SushyEmulator, raid_type: str, bays: tuple[int, ...], largest: int
) -> None:
    bmc = Bmc(emu, SYSTEMS[4])
    level = LEVELS[raid_type]
    r = bmc.create(raid_type, *bays)
    assert r.status_code == 201, r.text
    volume = r.json()
    assert (volume["RAIDType"], volume["VolumeType"], volume["CapacityBytes"]) == (
        raid_type,
        level.volume_type,
        largest,
    )
    assert bmc.delete(r.headers["Location"]).status_code == 204
    r = bmc.create(raid_type, *bays, CapacityBytes=100 * GIB)
    assert r.status_code == 201 and bmc.get(r.headers["Location"])["CapacityBytes"] == 100 * GIB
    assert bmc.delete(r.headers["Location"]).status_code == 204
    r = bmc.create(raid_type, *bays, CapacityBytes=largest)
    assert r.status_code == 201
    assert bmc.delete(r.headers["Location"]).status_code == 204
    assert bmc.volumes() == []


def test_delete_frees_the_drives_and_an_unknown_volume_is_404(emu: SushyEmulator) -> None:
    bmc = Bmc(emu, SYSTEMS[5])
    first = bmc.create("RAID1", 0, 1).headers["Location"]
    second = bmc.create("RAID0", 2).headers["Location"]
    assert second.endswith(f"/Disk.Virtual.1:{STORAGE_ID}")
    assert bmc.create("RAID5", 1, 2, 3).status_code == 400

    assert bmc.delete(first).status_code == 204
    assert requests.get(emu.url + first, auth=AUTH, timeout=10).status_code == 404
    assert bmc.volumes() == [second]
    assert [bmc.drive_volumes(n) for n in range(4)] == [[], [], [second], []]
    r = bmc.delete(first)
    assert r.status_code == 404 and r.json()["error"]["code"] == "Base.1.0.ResourceMissingAtURI"
    assert bmc.delete(f"{bmc.storage}/Volumes/Disk.Virtual.7:{STORAGE_ID}").status_code == 404

    r = bmc.create("RAID1", 0, 1)  # the freed drives, and the freed id, as a PERC reuses it
    assert r.status_code == 201 and r.headers["Location"] == first
    assert bmc.create("RAID5", 1, 3, 2).status_code == 400  # bay 2 is still RAID0's
    assert bmc.delete(second).status_code == 204
    r = bmc.create("RAID1", 2, 3)
    assert r.status_code == 201, r.text
    assert sorted(bmc.volumes()) == sorted([first, r.headers["Location"]])


def test_creates_and_deletes_are_logged(emu: SushyEmulator) -> None:
    bmc = Bmc(emu, SYSTEMS[6])
    uri = bmc.create("RAID1", 1, 0, Name="root").headers["Location"]
    assert bmc.create("RAID1", 0, 1).status_code == 400  # refused: not logged
    bmc.create("RAID0", 3, CapacityBytes=GIB)
    assert bmc.delete(uri).status_code == 204
    assert bmc.delete(uri).status_code == 404  # nothing deleted: not logged
    assert bmc.log_lines("create") == [
        f'{{"CapacityBytes":{SSD},"Drives":["Disk.Bay.1","Disk.Bay.0"],"Name":"root","RAIDType":"RAID1"}}',
        f'{{"CapacityBytes":{GIB},"Drives":["Disk.Bay.3"],"Name":"Virtual Disk 1","RAIDType":"RAID0"}}',
    ]
    assert bmc.log_lines("delete") == [f"Disk.Virtual.0:{STORAGE_ID}"]


def test_concurrent_creates_take_a_drive_once(emu: SushyEmulator) -> None:
    bmc = Bmc(emu, SYSTEMS[7])
    results: list[int] = []

    def create() -> None:
        results.append(bmc.create("RAID1", 0, 1).status_code)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] + [400] * 7
    assert len(bmc.volumes()) == 1


def test_through_the_sushy_library(emu: SushyEmulator) -> None:
    """What metalflow's Redfish client (and Ironic's redfish RAID interface) calls."""
    bmc = Bmc(emu, SYSTEMS[8])
    conn = sushy.Sushy(emu.url + "/redfish/v1", username=AUTH[0], password=AUTH[1])
    system = conn.get_system(bmc.path)
    [storage] = system.storage.get_members()
    assert storage.identity == STORAGE_ID and storage.name == "PERC emulated"
    assert [(d.identity, d.name, d.capacity_bytes, d.media_type) for d in storage.drives] == [
        ("Disk.Bay.0", "Physical Disk 0:1:0", SSD, "SSD"),
        ("Disk.Bay.1", "Physical Disk 0:1:1", SSD, "SSD"),
        ("Disk.Bay.2", "Physical Disk 0:1:2", HDD, "HDD"),
        ("Disk.Bay.3", "Physical Disk 0:1:3", HDD, "HDD"),
    ]
    assert {d.protocol for d in storage.drives} == {sushy.Protocol.SAS}
    assert storage.drives_max_size_bytes == HDD
    assert system.storage.max_drive_size_bytes == HDD
    [controller] = storage.storage_controllers
    assert controller.member_id == "0" and controller.name == "PERC emulated"
    assert controller.raid_types == [
        sushy.RAIDType.RAID0,
        sushy.RAIDType.RAID1,
        sushy.RAIDType.RAID5,
        sushy.RAIDType.RAID10,
    ]
    volumes = storage.volumes
    assert volumes.members_identities == ()
    assert volumes.operation_apply_time_support.mapped_supported_values == [sushy.ApplyTime.IMMEDIATE]

    def listed() -> list[str]:
        """Read on a fresh collection: sushy 5.14 keeps a collection's cached get_members() across
        refresh() when it was empty (cache_clear only invalidates a list's elements)."""
        fresh = conn.get_system(bmc.path).storage.get_members()[0].volumes
        return [v.identity for v in fresh.get_members()]

    drives = [d.path for d in storage.drives]
    payload = {
        "Name": "root",
        "RAIDType": "RAID1",
        "Links": {"Drives": [{"@odata.id": p} for p in drives[:2]]},
    }
    volume = volumes.create(payload, apply_time=sushy.ApplyTime.IMMEDIATE)
    assert volume.identity == f"Disk.Virtual.0:{STORAGE_ID}" and volume.name == "root"
    assert volume.raid_type == sushy.RAIDType.RAID1 and volume.volume_type == sushy.VolumeType.MIRRORED
    assert volume.capacity_bytes == SSD and volume.encrypted is False
    # sushy's Volume has no drive links: they are in its JSON
    assert [d["@odata.id"] for d in volume.json["Links"]["Drives"]] == drives[:2]
    assert [v.identity for v in storage.get_drive(drives[0]).volumes] == [volume.identity]  # Links/Volumes
    assert volumes.members_identities == (volume.path,)  # create() refreshed the collection
    assert listed() == [volume.identity]
    assert conn.get_system(bmc.path).storage.max_volume_size_bytes == SSD

    with pytest.raises(sushy.exceptions.BadRequestError, match="ResourceInUse"):
        volumes.create({"RAIDType": "RAID5", "Links": {"Drives": [{"@odata.id": p} for p in drives[1:]]}})
    with pytest.raises(sushy.exceptions.BadRequestError, match="PropertyValueNotInList"):
        volumes.create({"RAIDType": "RAID6", "Links": {"Drives": [{"@odata.id": p} for p in drives[2:]]}})

    assert volume.delete() is None  # 204: done, no TaskMonitor
    assert listed() == []
    raid10 = volumes.create({"RAIDType": "RAID10", "Links": {"Drives": [{"@odata.id": p} for p in drives]}})
    assert raid10.raid_type == sushy.RAIDType.RAID10 and raid10.capacity_bytes == 2 * SSD
    assert listed() == [raid10.identity]
    raid10.delete(apply_time=sushy.ApplyTime.IMMEDIATE)
    with pytest.raises(sushy.exceptions.ResourceNotFoundError):
        raid10.refresh()
    assert listed() == []


def test_volumes_survive_an_emulator_restart(tmp_path: Path) -> None:
    system = _system(0x40)
    first = start_sushy(tmp_path, [system], *AUTH, power_delay=(1, 1))
    try:
        bmc = Bmc(first, system)
        uri = bmc.create("RAID1", 0, 1, Name="root").headers["Location"]
        volume = bmc.get(uri)
    finally:
        first.stop()
    again = start_sushy(tmp_path, [system], *AUTH, port=first.port, power_delay=(1, 1))
    try:
        bmc = Bmc(again, system)
        assert bmc.volumes() == [uri] and bmc.get(uri) == volume
        assert bmc.create("RAID5", 1, 2, 3).status_code == 400  # its drives still in use
        # a power change lands on a read, writing the record back: the volume stays
        requests.post(
            bmc.url + "/Actions/ComputerSystem.Reset", json={"ResetType": "On"}, auth=AUTH, timeout=10
        ).raise_for_status()
        wait_for(lambda: bmc.get(bmc.path)["PowerState"] == "On", 20, "power on", interval=0.05)
        assert bmc.volumes() == [uri]
        assert bmc.delete(uri).status_code == 204
        assert len(bmc.log_lines("create")) == 1  # the log file is appended to across starts
    finally:
        again.stop()


def test_config_backed_storage_keeps_sushy_tools_views(tmp_path: Path) -> None:
    """A system whose storage the emulator's config gives is served as sushy-tools serves it."""
    configured, ours = _system(0x50), _system(0x51)
    fake = [
        {"uuid": s.uuid, "name": s.name, "power_state": "Off", "nics": [{"mac": s.mac, "ip": "127.0.0.1"}]}
        for s in (configured, ours)
    ]
    storage = {
        configured.uuid: [
            {
                "Id": "1",
                "Name": "Local Storage Controller",
                "StorageControllers": [{"MemberId": "0", "Name": "Contoso Integrated RAID", "SpeedGbps": 12}],
                "Drives": ["32ADF365C6C1B7BD"],
            }
        ]
    }
    drives = {
        (configured.uuid, "1"): [
            {
                "Id": "32ADF365C6C1B7BD",
                "Name": "Drive Sample",
                "CapacityBytes": 899527000000,
                "Protocol": "SAS",
            }
        ]
    }
    e = testbed_sushy._launch(
        tmp_path,
        [
            "SUSHY_EMULATOR_FAKE_DRIVER = True",
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake!r}",
            f"SUSHY_EMULATOR_STORAGE = {storage!r}",
            f"SUSHY_EMULATOR_DRIVES = {drives!r}",
        ],
        *AUTH,
        None,
        executable=testbed_sushy.UEFI_HTTP_EMULATOR,
    )
    try:
        kept = Bmc(e, configured)
        assert kept.get(f"{kept.path}/Storage")["Members"] == [{"@odata.id": f"{kept.path}/Storage/1"}]
        assert kept.get(f"{kept.path}/Storage/1/Drives/32ADF365C6C1B7BD")["CapacityBytes"] == 899527000000
        assert requests.get(e.url + kept.storage, auth=AUTH, timeout=10).status_code == 404
        assert requests.delete(e.url + f"{kept.storage}/Volumes/x", auth=AUTH, timeout=10).status_code == 405
        served = Bmc(e, ours)
        assert served.get(f"{served.path}/Storage")["Members"] == [{"@odata.id": served.storage}]
    finally:
        e.stop()


# --- without an emulator ----------------------------------------------------------------------------


def test_the_check_and_the_capacities() -> None:
    def drive_of(uri: str) -> str | None:
        return uri if uri in BAYS else None

    def check(raid_type: str, *bays: int, **extra: Any) -> VolumeRequest | list[str]:
        body = {"RAIDType": raid_type, "Links": {"Drives": [{"@odata.id": BAYS[n]} for n in bays]}, **extra}
        checked = check_volume(body, list(LEVELS), drive_of)
        return [p.message_id for p in checked] if isinstance(checked, list) else checked

    assert check("RAID10", 0, 1, 2, 3) == VolumeRequest(None, "RAID10", 2 * SSD, tuple(BAYS))
    assert check("RAID1", 0, 1, Name="os", CapacityBytes=GIB) == VolumeRequest(
        "os", "RAID1", GIB, tuple(BAYS[:2])
    )
    assert check("RAID1", 0, 1, CapacityBytes=True) == ["PropertyValueTypeError"]
    # every problem is reported, the first one is the error's code
    assert check("RAID1", 0, 1, Name="", Encrypted=True) == [
        "PropertyValueTypeError",
        "PropertyValueNotInList",
    ]
    assert check_volume({"RAIDType": "RAID0", "Links": {"Drives": []}}, ["RAID1"], drive_of) != []
    assert LEVELS["RAID10"].count_problem("RAID10", 5) == "RAID10 takes an even number of drives, not 5."
    assert LEVELS["RAID10"].count_problem("RAID10", 6) is None
    assert LEVELS["RAID5"].count_problem("RAID5", 4) is None
    assert max_capacity("RAID0", [SSD, HDD]) == SSD + HDD
    assert max_capacity("RAID1", [HDD, SSD]) == SSD
    assert max_capacity("RAID5", [SSD, HDD, HDD]) == 2 * SSD
    assert max_capacity("RAID10", [SSD, SSD, HDD, HDD]) == 2 * SSD


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[tuple[RaidFakeDriver, str]]:
    """The driver in this process, on a state dir of its own."""
    system = _system(0x60)

    class Driver(RaidFakeDriver):  # type: ignore[misc]  # initialize() sets class state
        pass

    config = {
        "SUSHY_EMULATOR_STATE_DIR": str(tmp_path),
        "SUSHY_EMULATOR_FAKE_SYSTEMS": [
            {"uuid": system.uuid, "name": system.name, "power_state": "Off", "nics": []}
        ],
    }
    yield Driver.initialize(config, logging.getLogger("test"))(), system.uuid


def test_a_stale_record_written_back_keeps_the_volumes(driver: tuple[RaidFakeDriver, str]) -> None:
    """A power change landing on a read, or a BIOS PATCH, writes back the whole record it read."""
    systems, uuid = driver
    stale = systems._get(uuid)
    created = systems.create_volume(uuid, VolumeRequest("root", "RAID1", SSD, ("Disk.Bay.0", "Disk.Bay.1")))
    assert isinstance(created, dict)
    systems._update(stale, boot_device="Pxe")
    assert systems.get_boot_device(uuid) == "Pxe"
    assert [v["Id"] for v in systems.get_volumes(uuid)] == [created["Id"]]
    stale = systems._get(uuid)
    assert systems.delete_volume(uuid, created["Id"])
    systems._update(stale, boot_mode="Legacy")
    assert systems.get_volumes(uuid) == [] and VOLUMES_KEY in systems._get(uuid)


def test_external_notifications_go_out_after_the_lock(
    driver: tuple[RaidFakeDriver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notifier's receiver may read the emulator back, which can write: it must not wait on us."""
    from testbed import sushy_bios, sushy_raid

    systems, uuid = driver
    sent: list[tuple[str, bool]] = []
    base = sushy_bios.BiosFakeDriver.__bases__[0]  # sushy-tools' FakeDriver

    def notify(self: Any, system: dict[str, Any]) -> None:
        free: list[bool] = []

        def try_lock() -> None:  # as the receiver's read-back would, from another thread
            free.append(sushy_raid._lock.acquire(timeout=1))
            if free[0]:
                sushy_raid._lock.release()

        t = threading.Thread(target=try_lock)
        t.start()
        t.join()
        sent.append((json.dumps(system.get(VOLUMES_KEY), sort_keys=True), free[0]))

    monkeypatch.setattr(base, "_send_external_notification", notify)
    record = systems._get(uuid)
    record["external_notifier"] = True
    systems._update(record, boot_device="Pxe")
    systems.create_volume(uuid, VolumeRequest(None, "RAID0", HDD, ("Disk.Bay.2",)))
    assert [free for _, free in sent] == [True, True]
    assert "Disk.Bay.2" in sent[1][0]
