"""The test bed's Redfish BIOS (testbed/sushy_bios.py) behaves like a real BMC's: a PATCH to
Bios/Settings is checked against the attribute registry, stays pending (GET Bios/Settings) until
the system next boots, and only then shows in Bios.Attributes; each write is logged for tests to
count. Against the real emulator (fake driver); the libvirt driver's: tests/e2e/test_sushy_libvirt_bios.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sushy

from testbed.processes import wait_for
from testbed.sushy import FakeSystem, SushyEmulator, start_sushy
from testbed.sushy_bios import (
    DEFAULT_BIOS_ATTRIBUTES,
    bios_registry,
    check_attributes,
)

AUTH = ("admin", "bios-pw")


def _system(n: int) -> FakeSystem:
    return FakeSystem(f"0f2b2e1c-0000-4000-8000-0000000001{n:02x}", f"bios-{n}", f"52:54:00:aa:01:{n:02x}")


SYSTEMS = [_system(n) for n in range(12)]


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SushyEmulator]:
    """One emulator for the module; each test takes its own system (power changes land 1 s late)."""
    e = start_sushy(tmp_path_factory.mktemp("sushy-bios"), SYSTEMS, *AUTH, power_delay=(1, 1))
    yield e
    e.stop()


class Bmc:
    """Plain-HTTP reads and writes of one system on an emulator."""

    def __init__(self, emu: SushyEmulator, system: FakeSystem):
        self.emu, self.uuid, self.url = emu, system.uuid, emu.system_url(system.uuid)

    def get(self, path: str = "") -> dict[str, Any]:
        r = requests.get(self.url + path, auth=AUTH, timeout=10)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def current(self) -> dict[str, Any]:
        attributes: dict[str, Any] = self.get("/BIOS")["Attributes"]
        return attributes

    def pending(self) -> dict[str, Any]:
        attributes: dict[str, Any] = self.get("/BIOS/Settings")["Attributes"]
        return attributes

    def power(self) -> str:
        return str(self.get()["PowerState"])

    def patch(self, attributes: dict[str, Any]) -> requests.Response:
        return requests.patch(
            self.url + "/BIOS/Settings", json={"Attributes": attributes}, auth=AUTH, timeout=10
        )

    def reset(self, kind: str) -> None:
        r = requests.post(
            self.url + "/Actions/ComputerSystem.Reset", json={"ResetType": kind}, auth=AUTH, timeout=10
        )
        r.raise_for_status()

    def wait_power(self, state: str) -> None:
        wait_for(lambda: self.power() == state, 20, f"{self.uuid} {state}", interval=0.05)

    def log_lines(self, what: str) -> list[str]:
        marker = f"metalflow-testbed: {what} {self.uuid} "
        text = self.emu.process.log_path.read_text()
        return [line.split(marker, 1)[1] for line in text.splitlines() if marker in line]


CHANGES = {"ProcTurboMode": "Disabled", "QuietBoot": False, "SerialNumber": "MF-0001"}
STORED = {"ProcTurboMode": "Disabled", "QuietBoot": "false", "SerialNumber": "MF-0001"}


def test_a_fake_system_has_the_default_bios_and_nothing_pending(emu: SushyEmulator) -> None:
    bmc = Bmc(emu, SYSTEMS[0])
    assert bmc.current() == DEFAULT_BIOS_ATTRIBUTES
    assert bmc.pending() == {}
    system = bmc.get()
    assert system["Bios"]["@odata.id"].endswith(f"/Systems/{bmc.uuid}/BIOS")
    assert system["BiosVersion"] == "1.0.0"


def test_a_patch_stays_pending_until_the_power_on_takes_effect(emu: SushyEmulator) -> None:
    bmc = Bmc(emu, SYSTEMS[1])
    assert bmc.patch(CHANGES).status_code == 204
    assert bmc.pending() == STORED
    assert bmc.current() == DEFAULT_BIOS_ATTRIBUTES
    assert bmc.log_lines("BIOS PATCH") == [
        '{"ProcTurboMode":"Disabled","QuietBoot":false,"SerialNumber":"MF-0001"}'
    ]

    bmc.reset("On")

    def on_and_never_early() -> bool:
        current = bmc.current()  # read before the power state: new values must not precede On
        power = bmc.power()
        assert power == "On" or current == DEFAULT_BIOS_ATTRIBUTES, "BIOS applied while still Off"
        return power == "On"

    wait_for(on_and_never_early, 20, "power on", interval=0.05)
    assert bmc.current() == {**DEFAULT_BIOS_ATTRIBUTES, **STORED}
    assert bmc.pending() == {}


def test_patches_merge_and_a_power_off_applies_nothing(emu: SushyEmulator) -> None:
    bmc = Bmc(emu, SYSTEMS[2])
    bmc.reset("On")
    bmc.wait_power("On")
    assert bmc.patch({"ProcTurboMode": "Disabled"}).status_code == 204
    assert bmc.patch({"NicBoot1": "Disabled"}).status_code == 204
    bmc.reset("ForceOff")
    bmc.wait_power("Off")
    assert bmc.pending() == {"ProcTurboMode": "Disabled", "NicBoot1": "Disabled"}
    assert bmc.current() == DEFAULT_BIOS_ATTRIBUTES


@pytest.mark.parametrize(("kind", "index"), [("ForceRestart", 3), ("GracefulRestart", 4), ("PowerCycle", 5)])
def test_a_restart_applies_the_pending_values(emu: SushyEmulator, kind: str, index: int) -> None:
    bmc = Bmc(emu, SYSTEMS[index])
    bmc.reset("On")
    bmc.wait_power("On")
    assert bmc.patch({"EmbeddedSata": "Ahci"}).status_code == 204
    bmc.reset(kind)
    assert bmc.current()["EmbeddedSata"] == "Raid" or bmc.power() == "On"
    wait_for(lambda: bmc.current()["EmbeddedSata"] == "Ahci", 20, f"{kind} to apply", interval=0.05)
    assert bmc.power() == "On"
    assert bmc.pending() == {}


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "unknown": ({"NoSuchKnob": "x"}, "Base.1.0.PropertyUnknown"),
    "read-only": ({"NumCores": 12}, "Base.1.0.PropertyNotWritable"),
    "not in list": ({"BootMode": "Legacy"}, "Base.1.0.PropertyValueNotInList"),
    "too long": ({"SerialNumber": "X" * 17}, "Base.1.0.PropertyValueFormatError"),
    "wrong type": ({"QuietBoot": "yes"}, "Base.1.0.PropertyValueTypeError"),
    "one bad of two": (
        {"ProcTurboMode": "Disabled", "L2Cache": "Y" * 40},
        "Base.1.0.PropertyValueFormatError",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_an_invalid_patch_is_refused_and_nothing_is_pending(emu: SushyEmulator, case: str) -> None:
    bmc = Bmc(emu, SYSTEMS[6])
    attributes, code = INVALID[case]
    r = bmc.patch(attributes)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == code
    info = err["@Message.ExtendedInfo"]
    assert [i["MessageId"] for i in info] == [code] and info[0]["Message"]
    assert bmc.pending() == {}
    assert bmc.current() == DEFAULT_BIOS_ATTRIBUTES


def test_a_patch_without_attributes_is_refused(emu: SushyEmulator) -> None:
    bmc = Bmc(emu, SYSTEMS[6])
    r = requests.patch(bmc.url + "/BIOS/Settings", json={"Foo": 1}, auth=AUTH, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "Base.1.0.PropertyMissing"


def test_the_registry_check_knows_integers_strings_and_booleans() -> None:
    """The emulator's registry has no writable integer (NumCores is read-only): a registry that does."""
    registry = {
        "RegistryEntries": {
            "Attributes": [
                {"AttributeName": "Cores", "Type": "Integer", "LowerBound": 2, "UpperBound": 8},
                {"AttributeName": "Tag", "Type": "String", "MinLength": 2, "ValueExpression": "[A-Z]+"},
                {"AttributeName": "Quiet", "Type": "Boolean"},
            ]
        }
    }

    def ids(attributes: dict[str, Any]) -> list[str]:
        return [p.message_id for p in check_attributes(attributes, registry)]

    assert ids({"Cores": 2, "Tag": "AB", "Quiet": True}) == []
    assert ids({"Cores": 9}) == ["PropertyValueFormatError"]
    assert ids({"Cores": 1}) == ["PropertyValueFormatError"]
    assert ids({"Cores": "4"}) == ["PropertyValueTypeError"]
    assert ids({"Cores": True}) == ["PropertyValueTypeError"]
    assert ids({"Tag": "A"}) == ["PropertyValueFormatError"]
    assert ids({"Tag": "ab"}) == ["PropertyValueFormatError"]
    assert ids({"Quiet": "true"}) == ["PropertyValueTypeError"]
    # the registry sushy-tools serves
    assert {a["AttributeName"] for a in bios_registry()["RegistryEntries"]["Attributes"]} == set(
        DEFAULT_BIOS_ATTRIBUTES
    )


def test_pending_values_survive_an_emulator_restart(tmp_path: Path) -> None:
    system = _system(0x40)
    first = start_sushy(tmp_path, [system], *AUTH, power_delay=(1, 1))
    try:
        assert Bmc(first, system).patch({"ProcTurboMode": "Disabled"}).status_code == 204
    finally:
        first.stop()
    again = start_sushy(tmp_path, [system], *AUTH, port=first.port, power_delay=(1, 1))
    try:
        bmc = Bmc(again, system)
        assert bmc.pending() == {"ProcTurboMode": "Disabled"}
        assert bmc.current() == DEFAULT_BIOS_ATTRIBUTES
        bmc.reset("On")
        wait_for(lambda: bmc.current()["ProcTurboMode"] == "Disabled", 20, "power on", interval=0.05)
        assert bmc.pending() == {}
        assert len(bmc.log_lines("BIOS PATCH")) == 1  # the log file is appended to across starts
    finally:
        again.stop()


def test_simple_update_bumps_the_bios_version_and_is_logged(emu: SushyEmulator) -> None:
    bmc = Bmc(emu, SYSTEMS[7])
    r = requests.post(
        emu.url + "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
        json={"ImageURI": "http://127.0.0.1:9/bios-1.1.bin", "Targets": [f"/redfish/v1/Systems/{bmc.uuid}"]},
        auth=AUTH,
        timeout=10,
    )
    assert r.status_code == 202, r.text  # a Task (testbed/sushy_tasks.py): flashed when it completes
    task = emu.url + r.headers["Location"]
    wait_for(lambda: requests.get(task, auth=AUTH, timeout=10).status_code == 200, 30, "the update task")
    assert bmc.get()["BiosVersion"] == "1.1.0"
    assert bmc.log_lines("SimpleUpdate") == ["http://127.0.0.1:9/bios-1.1.bin"]
    assert Bmc(emu, SYSTEMS[8]).get()["BiosVersion"] == "1.0.0"


def test_through_the_sushy_library(emu: SushyEmulator) -> None:
    """What metalflow's Redfish client sees: the registry the Bios resource names is found."""
    bmc = Bmc(emu, SYSTEMS[9])
    conn = sushy.Sushy(emu.url + "/redfish/v1", username=AUTH[0], password=AUTH[1])
    system = conn.get_system(f"/redfish/v1/Systems/{bmc.uuid}")
    bios = system.bios
    assert bios.attributes == DEFAULT_BIOS_ATTRIBUTES
    registry = bios.get_attribute_registry()
    assert registry is not None and registry.identity == "BiosAttributeRegistryP89.v1_0_0"
    entries = {a.name: a for a in registry.registry_entries.attributes}
    assert entries["NumCores"].read_only and entries["QuietBoot"].attribute_type == "Boolean"

    bios.set_attributes({"ProcTurboMode": "Disabled", "QuietBoot": False})
    bios.refresh()
    assert bios.pending_attributes == {"ProcTurboMode": "Disabled", "QuietBoot": "false"}
    assert bios.attributes == DEFAULT_BIOS_ATTRIBUTES
    with pytest.raises(sushy.exceptions.BadRequestError, match="PropertyValueNotInList"):
        bios.set_attributes({"BootMode": "Legacy"})

    system.reset_system(sushy.ResetType.ON)
    wait_for(lambda: bmc.power() == "On", 20, "power on", interval=0.05)
    bios.refresh()
    assert bios.attributes["ProcTurboMode"] == "Disabled"
    assert bios.pending_attributes == {}
