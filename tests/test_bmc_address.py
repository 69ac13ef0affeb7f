"""Every metal3 BMC address form parses to the right driver; bad ones name the accepted forms."""

from __future__ import annotations

import pytest

from metalflow.api.bmc_address import BMCAddressError, BootMethod, parse_bmc_address

CASES = [
    # address, driver, transport, host, port, system path, vmedia, vendor
    ("192.0.2.5", "ipmi", "udp", "192.0.2.5", 623, None, False, ""),
    ("192.0.2.5:6230", "ipmi", "udp", "192.0.2.5", 6230, None, False, ""),
    ("ipmi://bmc.example.com:6231", "ipmi", "udp", "bmc.example.com", 6231, None, False, ""),
    (
        "redfish://10.1.1.1/redfish/v1/Systems/1",
        "redfish",
        "https",
        "10.1.1.1",
        443,
        "/redfish/v1/Systems/1",
        False,
        "",
    ),
    (
        "redfish+http://10.1.1.1:8000/redfish/v1/Systems/abc/",
        "redfish",
        "http",
        "10.1.1.1",
        8000,
        "/redfish/v1/Systems/abc/",  # passed through as written, like upstream's redfish_system_id
        False,
        "",
    ),
    ("redfish+https://10.1.1.1:8443", "redfish", "https", "10.1.1.1", 8443, None, False, ""),
    (
        "redfish-virtualmedia://10.1.1.1/redfish/v1/Systems/1",
        "redfish",
        "https",
        "10.1.1.1",
        443,
        "/redfish/v1/Systems/1",
        True,
        "",
    ),
    (
        "redfish-virtualmedia+http://10.1.1.1:8000/redfish/v1/Systems/1",
        "redfish",
        "http",
        "10.1.1.1",
        8000,
        "/redfish/v1/Systems/1",
        True,
        "",
    ),
    (
        "redfish-uefihttp://10.1.1.1/redfish/v1/Systems/1",
        "redfish",
        "https",
        "10.1.1.1",
        443,
        "/redfish/v1/Systems/1",
        False,
        "",
    ),
    (
        "idrac-redfish://10.1.1.2/redfish/v1/Systems/System.Embedded.1",
        "redfish",
        "https",
        "10.1.1.2",
        443,
        "/redfish/v1/Systems/System.Embedded.1",
        False,
        "idrac",
    ),
    (
        "idrac-virtualmedia://10.1.1.2/redfish/v1/Systems/System.Embedded.1",
        "redfish",
        "https",
        "10.1.1.2",
        443,
        "/redfish/v1/Systems/System.Embedded.1",
        True,
        "idrac",
    ),
    (
        "ilo5-redfish://10.1.1.3/redfish/v1/Systems/1",
        "redfish",
        "https",
        "10.1.1.3",
        443,
        "/redfish/v1/Systems/1",
        False,
        "ilo5",
    ),
    (
        "ilo5-virtualmedia://10.1.1.3/redfish/v1/Systems/1",
        "redfish",
        "https",
        "10.1.1.3",
        443,
        "/redfish/v1/Systems/1",
        True,
        "ilo5",
    ),
    (
        "redfish://[2001:db8::1]:8443/redfish/v1/Systems/1",
        "redfish",
        "https",
        "[2001:db8::1]",
        8443,
        "/redfish/v1/Systems/1",
        False,
        "",
    ),
]


@pytest.mark.parametrize(
    ("address", "driver", "transport", "host", "port", "path", "vmedia", "vendor"), CASES
)
def test_metal3_address_forms(
    address: str,
    driver: str,
    transport: str,
    host: str,
    port: int,
    path: str | None,
    vmedia: bool,
    vendor: str,
) -> None:
    a = parse_bmc_address(address)
    assert (a.driver, a.transport, a.host, a.port, a.system_path, a.virtual_media, a.vendor) == (
        driver,
        transport,
        host,
        port,
        path,
        vmedia,
        vendor,
    )
    assert (a.boot_method == BootMethod.UEFI_HTTP) == ("uefihttp" in address)


def test_certificate_verification_follows_the_flag() -> None:
    assert parse_bmc_address("redfish://h/redfish/v1/Systems/1").verify_tls
    assert not parse_bmc_address(
        "redfish://h/redfish/v1/Systems/1", disable_certificate_verification=True
    ).verify_tls
    assert not parse_bmc_address("redfish+http://h/redfish/v1/Systems/1").verify_tls


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("", "empty"),
        ("gopher://h", "unknown BMC address scheme 'gopher'"),
        ("redfish://", "has no valid host"),
        ("redfish://h:99999/redfish/v1/Systems/1", "invalid port 99999: write 1 to 65535"),
        ("redfish://h:0/redfish/v1/Systems/1", "invalid port 0: write 1 to 65535"),
        ("redfish://admin:pw@h/redfish/v1/Systems/1", "must not carry credentials"),
        ("redfish://bad_host!/redfish/v1/Systems/1", "'bad_host!' is neither an IP address nor a DNS name"),
        ("ipmi://h?privilegelevel=operator", "privilegelevel='operator' is not an IPMI privilege level"),
    ],
)
def test_bad_addresses_are_typed_and_list_the_accepted_forms(address: str, message: str) -> None:
    with pytest.raises(BMCAddressError, match=message) as err:
        parse_bmc_address(address)
    if message.startswith(("unknown", "has no valid host")):
        assert "redfish-virtualmedia://" in str(err.value) and "ipmi://" in str(err.value)


def test_paths_pass_through_as_upstream_does() -> None:
    """Upstream gives Ironic any Redfish path as the system id and ignores an IPMI path; the
    old parser refused both (see tests/test_bmc_address_upstream.py for upstream's cases)."""
    assert parse_bmc_address("redfish://h/some/other/path").system_path == "/some/other/path"
    assert parse_bmc_address("redfish://h/redfish/v1/").system_path is None
    ipmi = parse_bmc_address("ipmi://h/redfish/v1/Systems/1")
    assert (ipmi.driver, ipmi.system_path, ipmi.path) == ("ipmi", None, "/redfish/v1/Systems/1")
