"""The driver seam: every address scheme resolves to a registered driver, vendor drivers run
against sushy-emulator and show in status, IPMI refuses virtual media, and the boot method and
mode pick what the BMC boots (PXE or UEFI HTTP, UEFI or legacy)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import pytest_asyncio
import requests
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from tests_support import record

from activities.bmc.driver import BMCDriver, Credentials
from activities.bmc.ipmi import IPMIDriver
from activities.bmc.redfish import RedfishDriver
from activities.bmc.registry import DRIVERS, driver_class
from metalflow.api.bmc_address import SCHEMES, BootMethod, parse_bmc_address
from metalflow.api.models import BMCDetails, HostRef, HostSpec, HostStatus
from metalflow.api.models import ProvisioningState as S
from metalflow.api.validation import spec_problems
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import build_worker

CREDS = Credentials("admin", "unused", "1", "test secret")


def expected(scheme: str) -> tuple[str, str, BootMethod]:
    """What a scheme's name says, read independently of the table: protocol, vendor, boot."""
    name = scheme.split("+", 1)[0]
    protocol = "ipmi" if name in ("ipmi", "libvirt") else "redfish"
    vendor = name.split("-", 1)[0] if name.startswith(("idrac-", "ilo5-")) else ""
    boot = (
        BootMethod.VIRTUAL_MEDIA
        if "virtualmedia" in name
        else BootMethod.UEFI_HTTP
        if "uefihttp" in name
        else BootMethod.PXE
    )
    return protocol, vendor, boot


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_scheme_resolves_to_a_registered_driver(scheme: str) -> None:
    addr = parse_bmc_address(f"{scheme}://192.0.2.1")
    protocol, vendor, boot = expected(scheme)
    cls = driver_class(addr)
    assert (cls.protocol, cls.vendor, addr.boot_method) == (protocol, vendor, boot)
    assert addr.virtual_media == (boot == BootMethod.VIRTUAL_MEDIA)
    driver = cls(addr, CREDS)
    assert driver.name == (f"{protocol}/{vendor}" if vendor else protocol)
    if protocol == "redfish":
        assert isinstance(driver, RedfishDriver), "a vendor driver is a Redfish subclass"


def test_the_registry_holds_each_driver_under_its_own_key() -> None:
    assert {key: (cls.protocol, cls.vendor) for key, cls in DRIVERS.items()} == {k: k for k in DRIVERS}


@pytest.mark.parametrize("call", ["insert", "eject"])
def test_ipmi_driver_has_no_virtual_media(call: str) -> None:
    driver = IPMIDriver(parse_bmc_address("ipmi://192.0.2.1:6230"), CREDS)
    with pytest.raises(ApplicationError) as err:
        driver.insert_media("http://192.0.2.9/deploy.iso") if call == "insert" else driver.eject_media()
    assert err.value.type == "BMCUnsupportedError" and err.value.non_retryable
    assert "ipmi BMC driver (ipmi://) has no virtual media" in err.value.message


@pytest.mark.parametrize(
    ("call", "missing"),
    [
        (lambda d: d.read_bios(), "BIOS settings"),
        (lambda d: d.apply_bios_settings({"ProcVirtualization": "Enabled"}), "BIOS settings"),
        (lambda d: d.firmware_versions(), "firmware updates"),
        (lambda d: d.start_firmware_update("bios", "http://192.0.2.9/bios.bin", []), "firmware updates"),
        # metal3's wording for a BMC without RAID support
        (
            lambda d: d.configure_raid([{"level": "1"}]),
            "RAID configuration is not supported by the ipmi driver",
        ),
    ],
)
def test_unbuilt_operations_are_typed_refusals_naming_the_driver(
    call: Callable[[BMCDriver], None], missing: str
) -> None:
    """IPMI has no BIOS settings, firmware updates or RAID (Redfish builds them: tests/test_firmware_*.py,
    tests/test_raid.py): each is a typed refusal naming the driver, never a guess."""
    addr = parse_bmc_address("ipmi://192.0.2.2")
    driver = driver_class(addr)(addr, CREDS)
    with pytest.raises(ApplicationError) as err:
        call(driver)
    assert err.value.type == "BMCUnsupportedError" and err.value.non_retryable
    assert "ipmi" in err.value.message and missing in err.value.message


# ---- through the workflows, against sushy-emulator and an emulated server ----


@pytest_asyncio.fixture
async def dc(client: Client, settings: Settings, ns: str) -> AsyncIterator[Datacenter]:
    async with Datacenter(settings, hosts=1, namespace=ns, image_mib=4) as datacenter:
        with ThreadPoolExecutor(max_workers=8) as executor:
            async with build_worker(client, settings, executor):
                yield datacenter


async def wait_status(
    client: Client, ref: HostRef, pred: Callable[[HostStatus], Any], timeout: float = 180
) -> HostStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred(st := await operations.status(client, ref)):
        assert asyncio.get_running_loop().time() < deadline, f"not reached; last: {st.model_dump_json()}"
        await asyncio.sleep(0.3)
    return st


def with_scheme(dc: Datacenter, scheme: str, **changes: Any) -> Any:
    """Host 0 of the datacenter behind another address scheme (same sushy system), no image."""
    address = dc.host(0).spec.bmc.address.replace("redfish+http://", f"{scheme}+http://")
    return dc.host(0, bmc=BMCDetails(address=address, credentials=dc.credentials), image=None, **changes)


async def test_idrac_host_registers_and_status_shows_the_vendor_driver(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    host = with_scheme(dc, "idrac-virtualmedia", boot_mac_address=None)
    await operations.apply(client, host, settings)
    st = await wait_status(client, host.ref, lambda s: s.provisioning.state == S.AVAILABLE or s.error_type)
    assert st.error_type is None, st.error_message
    assert st.bmc_driver == "redfish/idrac"
    assert st.model_dump(mode="json", by_alias=True)["bmcDriver"] == "redfish/idrac"
    # the vendor driver did the Redfish work: inspection booted the deploy ISO it inserted
    assert dc.emulated[0].boots[0].target == "Cd" and dc.emulated[0].boots[0].agent


@pytest.mark.parametrize(
    ("scheme", "mode", "target"),
    [("redfish", "UEFI", "Pxe"), ("redfish", "legacy", "Pxe"), ("redfish-uefihttp", "UEFI", "UefiHttp")],
)
async def test_boot_method_and_mode_pick_what_the_bmc_boots(
    client: Client, settings: Settings, dc: Datacenter, scheme: str, mode: str, target: str
) -> None:
    """The scheme's boot method picks the boot target the BMC is asked for (UefiHttp for
    redfish-uefihttp://, whose firmware then asks DHCP as HTTPClient), spec.bootMode its mode;
    the host is inspected either way. (A legacy redfish-uefihttp host is refused at admission:
    tests/test_bad_input.py.)"""
    host = with_scheme(dc, scheme, boot_mode=mode)
    await operations.apply(client, host, settings)
    st = await wait_status(client, host.ref, lambda s: s.error_type is not None or s.hardware is not None)
    assert st.error_type is None, st.error_message
    first = dc.emulated[0].boots[0]
    assert first.target == target and first.agent, dc.emulated[0].boots
    system = dc.systems[0]
    boot = requests.get(dc.sushy.system_url(system.uuid), auth=("admin", dc.password), timeout=5).json()[
        "Boot"
    ]
    assert boot["BootSourceOverrideMode"] == ("UEFI" if mode == "UEFI" else "Legacy")
    entry = (settings.boot_dir / "dnsmasq" / "hosts" / host.ref.host_id).read_text()
    assert "set:" not in entry, entry  # the firmware's vendor class picks PXE or HTTP boot
    if scheme == "redfish-uefihttp":  # the UefiHttp boot target's histories, for tests/test_replay.py
        await record(client, host.ref.workflow_id, "uefi-http")


@pytest.mark.parametrize(("mode", "refused"), [("legacy", True), ("UEFI", False), ("UEFISecureBoot", False)])
def test_legacy_boot_mode_cannot_boot_by_uefi_http(mode: str, refused: bool) -> None:
    """Refused at admission (metalflow's rule: firmware HTTP boot is a UEFI feature), naming the
    field and the fix; a PXE host may be legacy."""
    for scheme, want in (("redfish-uefihttp", refused), ("redfish", False)):
        spec = HostSpec.model_validate(
            {
                "online": True,
                "bootMode": mode,
                "bootMACAddress": "52:54:00:00:00:01",
                "bmc": {
                    "address": f"{scheme}://192.0.2.1/redfish/v1/Systems/1",
                    "credentials": {"name": "c"},
                },
            }
        )
        problems = [p for p in spec_problems(spec) if p.startswith("spec.bootMode")]
        assert bool(problems) == want, (scheme, problems)
        if want:
            assert "UEFI HTTP" in problems[0] and "set bootMode UEFI" in problems[0]
