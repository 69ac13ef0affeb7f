"""The test bed's libvirt driver keeps a BIOS write pending in the domain's metadata until the
domain really starts (testbed/sushy_bios.py), as a real BMC does; on libvirt's in-process test
hypervisor (test:///default: no VM). In `make e2e`, where the libvirt bindings are installed
(scripts/e2e-deps.sh); the fake driver's side is tests/test_sushy_bios.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.sushy_bios import DEFAULT_BIOS_ATTRIBUTES, PENDING_NS

pytestmark = [pytest.mark.e2e]


# --- the libvirt driver, on libvirt's in-process test hypervisor ----------------------------------


@pytest.fixture
def libvirt_driver() -> Iterator[tuple[Any, Any]]:
    """The test bed's libvirt driver class on test:///default, with a domain of its own."""
    libvirt = pytest.importorskip("libvirt")
    from testbed.sushy_uefihttp import UefiHttpLibvirtDriver

    class Driver(UefiHttpLibvirtDriver):  # type: ignore[misc]  # initialize() sets class state
        pass

    conn = libvirt.open("test:///default")  # held open: the test driver's state lives while it is
    domain = conn.defineXML(
        "<domain type='test'><name>mf-bios</name><memory>1024</memory><os><type>hvm</type></os></domain>"
    )
    try:
        driver = Driver.initialize({}, logging.getLogger("test"), "test:///default")()
        yield driver, domain
    finally:
        if domain.isActive():
            domain.destroy()
        domain.undefine()
        conn.close()


def test_libvirt_keeps_a_patch_pending_in_the_domain_metadata_until_it_starts(
    libvirt_driver: tuple[Any, Any],
) -> None:
    driver, domain = libvirt_driver
    uuid = domain.UUIDString()
    driver.set_bios(uuid, {"ProcTurboMode": "Disabled", "QuietBoot": False})
    assert driver.get_bios_pending(uuid) == {"ProcTurboMode": "Disabled", "QuietBoot": "false"}
    assert driver.get_bios(uuid) == DEFAULT_BIOS_ATTRIBUTES
    assert PENDING_NS in domain.XMLDesc(0)  # persistent: in the domain's definition

    driver.set_power_state(uuid, "ForceOff")  # already off: nothing starts
    driver.set_power_state(uuid, "ForceRestart")  # a restart of a stopped domain starts nothing
    assert driver.get_bios(uuid) == DEFAULT_BIOS_ATTRIBUTES

    driver.set_power_state(uuid, "On")
    assert domain.isActive()
    assert driver.get_bios(uuid) == {
        **DEFAULT_BIOS_ATTRIBUTES,
        "ProcTurboMode": "Disabled",
        "QuietBoot": "false",
    }
    assert driver.get_bios_pending(uuid) == {}

    driver.set_bios(uuid, {"NicBoot1": "Disabled"})
    driver.set_power_state(uuid, "On")  # already on: nothing starts
    assert driver.get_bios(uuid)["NicBoot1"] == "NetworkBoot"
    driver.set_power_state(uuid, "PowerCycle")
    assert driver.get_bios(uuid)["NicBoot1"] == "Disabled"
    assert driver.get_bios_pending(uuid) == {}
