"""BMC activities against real protocol peers: sushy-emulator (Redfish) and pyghmi's BMC (IPMI)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import requests
from fixtures.sushy import PASSWORD, SYSTEMS
from fixtures.www import serve_directory
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import bmc
from activities.bmc.registry import open_driver
from metalflow.api.bmc import (
    BMCTarget,
    BootDevice,
    BootDeviceRequest,
    MediaRequest,
    PowerAction,
    PowerRequest,
)
from metalflow.api.models import BootMode, SecretRef
from testbed.datacenter import write_secret
from testbed.faultproxy import FaultProxy
from testbed.ipmi import IpmiBmc
from testbed.processes import free_port
from testbed.sushy import SushyEmulator

env = ActivityEnvironment()


def creds(tmp_path: Path, password: str, name: str = "bmc") -> SecretRef:
    path = tmp_path / f"{name}.yaml"
    write_secret(path, {"username": "admin", "password": password})
    return SecretRef(name=name, path=str(path))


def target(sushy: SushyEmulator, tmp_path: Path, system: int = 0, password: str = PASSWORD) -> BMCTarget:
    return BMCTarget(
        address=sushy.system_address(SYSTEMS[system].uuid), credentials=creds(tmp_path, password)
    )


def test_validate_reports_power_and_the_secret_version(sushy: SushyEmulator, tmp_path: Path) -> None:
    t = target(sushy, tmp_path)
    got = env.run(bmc.validate, t)
    assert got.driver == "redfish" and got.system_id.endswith(SYSTEMS[0].uuid)
    assert got.credentials_version == str(Path(str(t.credentials.path)).stat().st_mtime_ns)


async def test_a_power_read_costs_the_bmc_one_get_of_the_system(sushy: SushyEmulator, tmp_path: Path) -> None:
    """Registration and every batched power check read the power this way: the system the call
    has just fetched is not fetched again (it was two GETs a read, twice the BMC's load)."""
    uuid = SYSTEMS[1].uuid
    async with FaultProxy(sushy.url) as proxy:
        t = BMCTarget(
            address=f"redfish+{proxy.url}/redfish/v1/Systems/{uuid}", credentials=creds(tmp_path, PASSWORD)
        )

        def system_gets() -> int:
            return sum(
                1 for e in proxy.log if e.method == "GET" and e.path.rstrip("/").endswith(f"/Systems/{uuid}")
            )

        await asyncio.to_thread(env.run, bmc.validate, t)  # the first also logs in
        before = system_gets()
        for _ in range(3):
            assert (await asyncio.to_thread(env.run, bmc.validate, t)).system_id.endswith(uuid)
        assert system_gets() - before == 3


def test_wrong_password_is_a_permanent_auth_error_naming_the_secret(
    sushy: SushyEmulator, tmp_path: Path
) -> None:
    with pytest.raises(ApplicationError) as err:
        env.run(bmc.validate, target(sushy, tmp_path, password="not-the-pw"))
    assert err.value.type == "BMCAuthError" and err.value.non_retryable
    assert "bmc.yaml" in err.value.message and "not-the-pw" not in err.value.message


def test_unreachable_bmc_is_retryable(tmp_path: Path) -> None:
    t = BMCTarget(
        address=f"redfish+http://127.0.0.1:{free_port()}/redfish/v1/Systems/1",
        credentials=creds(tmp_path, "x"),
    )
    with pytest.raises(ApplicationError) as err:
        env.run(bmc.validate, t)
    assert not err.value.non_retryable and err.value.type == "BMCUnreachable"


def test_missing_system_path_lists_the_systems_the_bmc_has(sushy: SushyEmulator, tmp_path: Path) -> None:
    t = BMCTarget(
        address=f"redfish+http://127.0.0.1:{sushy.port}/redfish/v1/Systems/nope",
        credentials=creds(tmp_path, PASSWORD),
    )
    with pytest.raises(ApplicationError) as err:
        env.run(bmc.validate, t)
    assert err.value.type == "BMCSystemNotFound" and err.value.non_retryable
    assert SYSTEMS[0].uuid in err.value.message and SYSTEMS[1].uuid in err.value.message
    # no path and several systems: the operator must say which
    t = t.model_copy(update={"address": f"redfish+http://127.0.0.1:{sushy.port}"})
    with pytest.raises(ApplicationError, match="manages 2 systems; add the system path"):
        env.run(bmc.validate, t)


def test_malformed_address_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as err:
        env.run(bmc.validate, BMCTarget(address="redfish://", credentials=creds(tmp_path, "x")))
    assert err.value.type == "BMCAddressError" and err.value.non_retryable


def test_power_is_idempotent_and_waits_for_the_bmc(sushy: SushyEmulator, tmp_path: Path) -> None:
    t = target(sushy, tmp_path, system=1)
    first = env.run(bmc.power, PowerRequest(target=t, action=PowerAction.ON))
    assert first.powered_on and first.changed
    again = env.run(bmc.power, PowerRequest(target=t, action=PowerAction.ON))
    assert again.powered_on and not again.changed
    r = requests.get(sushy.system_url(SYSTEMS[1].uuid), auth=("admin", PASSWORD), timeout=5)
    assert r.json()["PowerState"] == "On"
    off = env.run(bmc.power, PowerRequest(target=t, action=PowerAction.OFF))
    assert not off.powered_on and off.changed
    assert not env.run(bmc.power, PowerRequest(target=t, action=PowerAction.OFF)).changed


def test_boot_device_is_set_with_mode_and_frequency(sushy: SushyEmulator, tmp_path: Path) -> None:
    t = target(sushy, tmp_path)
    env.run(bmc.set_boot_device, BootDeviceRequest(target=t, device=BootDevice.PXE, boot_mode=BootMode.UEFI))
    boot = requests.get(sushy.system_url(SYSTEMS[0].uuid), auth=("admin", PASSWORD), timeout=5).json()["Boot"]
    assert boot["BootSourceOverrideTarget"] == "Pxe" and boot["BootSourceOverrideMode"] == "UEFI"
    env.run(bmc.set_boot_device, BootDeviceRequest(target=t, device=BootDevice.DISK, persistent=True))
    boot = requests.get(sushy.system_url(SYSTEMS[0].uuid), auth=("admin", PASSWORD), timeout=5).json()["Boot"]
    assert boot["BootSourceOverrideTarget"] == "Hdd" and boot["BootSourceOverrideEnabled"] == "Continuous"


def test_out_of_band_inventory_maps_nic_macs(sushy: SushyEmulator, tmp_path: Path) -> None:
    hw = open_driver(target(sushy, tmp_path)).inventory()
    assert [n.mac for n in hw.nics] == [SYSTEMS[0].mac]
    assert hw.system_vendor.manufacturer  # the emulator reports itself


def test_virtual_media_insert_and_eject(sushy: SushyEmulator, tmp_path: Path) -> None:
    iso = tmp_path / "www" / "deploy.iso"
    iso.parent.mkdir()
    iso.write_bytes(b"\0" * 32768 + b"\x01CD001")

    with serve_directory(iso.parent) as base:
        url = f"{base}/deploy.iso"
        t = target(sushy, tmp_path)
        env.run(bmc.insert_media, MediaRequest(target=t, image_url=url))
        env.run(bmc.insert_media, MediaRequest(target=t, image_url=url))  # idempotent
        cd_url = sushy.system_url(SYSTEMS[0].uuid) + "/VirtualMedia/Cd"
        media = requests.get(cd_url, auth=("admin", PASSWORD), timeout=5).json()
        assert media["Inserted"] and media["Image"] == url
        env.run(bmc.eject_media, MediaRequest(target=t))
        media = requests.get(cd_url, auth=("admin", PASSWORD), timeout=5).json()
        assert not media["Inserted"]


def test_ipmi_power_bootdev_and_wrong_password(ipmi_bmc: IpmiBmc, tmp_path: Path) -> None:
    t = BMCTarget(address=ipmi_bmc.address, credentials=creds(tmp_path, ipmi_bmc.password))
    # pyghmi's server answers cipher suite 3 only: this login works because the client adopts it
    assert env.run(bmc.validate, t).driver == "ipmi"
    assert env.run(bmc.power, PowerRequest(target=t, action=PowerAction.ON)).changed
    assert not env.run(bmc.power, PowerRequest(target=t, action=PowerAction.ON)).changed
    assert env.run(bmc.validate, t).powered_on
    env.run(bmc.set_boot_device, BootDeviceRequest(target=t, device=BootDevice.PXE, persistent=True))
    with pytest.raises(ApplicationError) as err:
        env.run(bmc.insert_media, MediaRequest(target=t, image_url="http://x/y.iso"))
    assert err.value.type == "BMCUnsupportedError"
    bad = BMCTarget(address=ipmi_bmc.address, credentials=creds(tmp_path, "nope", name="bad"))
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        env.run(bmc.validate, bad)
    assert err.value.type == "BMCAuthError" and err.value.non_retryable
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("mode", [BootMode.UEFI, BootMode.LEGACY])
@pytest.mark.parametrize(
    ("device", "redfish_target"),
    [(BootDevice.PXE, "Pxe"), (BootDevice.UEFI_HTTP, "UefiHttp"), (BootDevice.DISK, "Hdd")],
)
def test_boot_target_and_mode_reach_the_redfish_bmc(
    sushy: SushyEmulator, tmp_path: Path, device: BootDevice, redfish_target: str, mode: BootMode
) -> None:
    """Each boot device the workflows ask for, in each boot mode, is what the BMC then reports
    (BootSourceOverrideTarget and Mode; UefiHttp kept as such: testbed/sushy_uefihttp.py)."""
    t = target(sushy, tmp_path)
    other = BootMode.LEGACY if mode == BootMode.UEFI else BootMode.UEFI
    env.run(bmc.set_boot_device, BootDeviceRequest(target=t, device=BootDevice.CD, boot_mode=other))
    if device == BootDevice.UEFI_HTTP and mode == BootMode.LEGACY:
        # the BMC offers UefiHttp in UEFI mode only: a typed refusal, the BMC left as it was
        with pytest.raises(ApplicationError) as err:
            env.run(bmc.set_boot_device, BootDeviceRequest(target=t, device=device, boot_mode=mode))
        assert err.value.type == "InvalidSpec" and "UEFI HTTP boot needs UEFI boot mode" in err.value.message
        boot = requests.get(sushy.system_url(SYSTEMS[0].uuid), auth=("admin", PASSWORD), timeout=5).json()
        assert boot["Boot"]["BootSourceOverrideTarget"] == "Cd"
        return
    # from Legacy, UefiHttp needs the mode switched first (the BMC offers it only in UEFI mode)
    env.run(bmc.set_boot_device, BootDeviceRequest(target=t, device=device, boot_mode=mode))
    boot = requests.get(sushy.system_url(SYSTEMS[0].uuid), auth=("admin", PASSWORD), timeout=5).json()["Boot"]
    want = "UEFI" if mode == BootMode.UEFI else "Legacy"
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideMode"]) == (redfish_target, want)


@pytest.mark.parametrize(("mode", "efi"), [(BootMode.UEFI, True), (BootMode.LEGACY, False), (None, True)])
def test_ipmi_boot_flags_carry_the_boot_mode(
    ipmi_bmc: IpmiBmc, tmp_path: Path, mode: BootMode | None, efi: bool
) -> None:
    """spec.bootMode reaches an IPMI BMC as the boot flags' EFI bit (unset: metal3's default,
    UEFI), even when only the mode changes (the device and persistence already match)."""
    t = BMCTarget(address=ipmi_bmc.address, credentials=creds(tmp_path, ipmi_bmc.password))
    other = BootMode.UEFI if not efi else BootMode.LEGACY
    env.run(bmc.set_boot_device, BootDeviceRequest(target=t, device=BootDevice.PXE, boot_mode=other))
    env.run(bmc.set_boot_device, BootDeviceRequest(target=t, device=BootDevice.PXE, boot_mode=mode))
    with open_driver(t)._session() as cmd:  # type: ignore[attr-defined]
        assert cmd.get_bootdev()["uefimode"] is efi
