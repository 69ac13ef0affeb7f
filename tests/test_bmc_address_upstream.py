"""Every BMC address in baremetal-operator's own tests gets upstream's verdict and result.

Cases restated from metal3-io/baremetal-operator at commit
02aa5059e3482f9dc3b5115c3a45cec4b000ae16 (2026-08-20):
  - pkg/hardwareutils/bmc/access_test.go: TestParse (scheme, host, port, path, query of the
    parsed URL), TestStaticDriverInfo (Ironic driver and interfaces, whether a MAC is needed),
    TestDriverInfo (Ironic driver_info; credentials left out, metalflow never puts them there),
    TestUnknownType;
  - internal/webhooks/metal3.io/v1alpha1/baremetalhost_validation_test.go: the address cases
    of TestValidateCreate (DNS names, IPv6 literals, unknown types, RAID, MAC and secure-boot
    support, out-of-band inspection).
The data is written out here (no upstream code is used); the module docstring of
metalflow/api/bmc_address.py lists where metalflow is deliberately stricter.
"""

from __future__ import annotations

import random

import pytest

from metalflow.api.bmc_address import BMCAddress, parse_bmc_address
from metalflow.api.errors import BMCAddressError
from metalflow.api.models import HostSpec
from metalflow.api.validation import SpecError, validate_spec

# ---- TestParse and the webhook's address checks: verdict, then Go's URL fields ----
# (address, accepted, type, hostname (URL.Hostname), netloc (URL.Host), port as written,
#  path, query)
OK, REFUSED = True, False
PARSE_CASES = [
    (
        "libvirt://192.168.122.1:6233/?abc=def",
        OK,
        "libvirt",
        "192.168.122.1",
        "192.168.122.1:6233",
        "6233",
        "/",
        {"abc": ["def"]},
    ),
    ("192.168.122.1", OK, "ipmi", "192.168.122.1", "192.168.122.1", "", "", {}),
    ("my.favoritebmc.com", OK, "ipmi", "my.favoritebmc.com", "my.favoritebmc.com", "", "", {}),
    ("my.examplehost.com", OK, "ipmi", "my.examplehost.com", "my.examplehost.com", "", "", {}),
    ("my-.examplehost.com", REFUSED, "", "", "", "", "", {}),
    ("[fe80::fc33:62ff:fe33:8xff]:6223", REFUSED, "", "", "", "", "", {}),
    ("192.168.122.1:6233", OK, "ipmi", "192.168.122.1", "192.168.122.1:6233", "6233", "", {}),
    (
        "[fe80::fc33:62ff:fe83:8a76]:6233",
        OK,
        "ipmi",
        "fe80::fc33:62ff:fe83:8a76",
        "[fe80::fc33:62ff:fe83:8a76]:6233",
        "6233",
        "",
        {},
    ),
    ("[fe80::fc33:62ff:fe83:8a76]", REFUSED, "", "", "", "", "", {}),
    ("ipmi://192.168.122.1:6233", OK, "ipmi", "192.168.122.1", "192.168.122.1:6233", "6233", "", {}),
    ("ipmi:192.168.122.1", OK, "ipmi", "192.168.122.1", "192.168.122.1", "", "", {}),
    ("ipmi:192.168.122.1:6233", OK, "ipmi", "192.168.122.1", "192.168.122.1:6233", "6233", "", {}),
    ("redfish://192.168.122.1", OK, "redfish", "192.168.122.1", "192.168.122.1", "", "", {}),
    (
        "redfish://192.168.122.1:6233/foo",
        OK,
        "redfish",
        "192.168.122.1",
        "192.168.122.1:6233",
        "6233",
        "/foo",
        {},
    ),
    (
        "redfish://[fe80::fc33:62ff:fe83:8a76]",
        OK,
        "redfish",
        "fe80::fc33:62ff:fe83:8a76",
        "[fe80::fc33:62ff:fe83:8a76]",
        "",
        "",
        {},
    ),
    (
        "redfish://[fe80::fc33:62ff:fe83:8a76]:6233/foo",
        OK,
        "redfish",
        "fe80::fc33:62ff:fe83:8a76",
        "[fe80::fc33:62ff:fe83:8a76]:6233",
        "6233",
        "/foo",
        {},
    ),
    ("redfish:192.168.122.1", OK, "redfish", "192.168.122.1", "192.168.122.1", "", "", {}),
    # TestUnknownType and the webhook's unknown types
    ("foo://192.168.122.1", REFUSED, "", "", "", "", "", {}),
    ("test:127.0.1.1", REFUSED, "", "", "", "", "", {}),
    ("ipm:host.example.com:6223", REFUSED, "", "", "", "", "", {}),
    # the webhook's DNS-name checks
    (
        "ipmi://host-0.example.com.org:6223",
        OK,
        "ipmi",
        "host-0.example.com.org",
        "host-0.example.com.org:6223",
        "6223",
        "",
        {},
    ),
    ("ipmi://baremetalhost", OK, "ipmi", "baremetalhost", "baremetalhost", "", "", {}),
    (
        "ipmi://[fe80::fc33:62ff:fe83:8a76]:6233",
        OK,
        "ipmi",
        "fe80::fc33:62ff:fe83:8a76",
        "[fe80::fc33:62ff:fe83:8a76]:6233",
        "6233",
        "",
        {},
    ),
    ("ipmi://-host.example.com.org", REFUSED, "", "", "", "", "", {}),
    ("ipmi://host+1.example.com.org", REFUSED, "", "", "", "", "", {}),
    ("[@]host.example.com", REFUSED, "", "", "", "", "", {}),
    ("ipmi://[fe80::fc33:62ff:fe33:8xff]:6223", REFUSED, "", "", "", "", "", {}),
]


@pytest.mark.parametrize(
    ("address", "accepted", "type_", "hostname", "netloc", "port", "path", "query"), PARSE_CASES
)
def test_upstream_parse_cases(
    address: str,
    accepted: bool,
    type_: str,
    hostname: str,
    netloc: str,
    port: str,
    path: str,
    query: dict[str, list[str]],
) -> None:
    if not accepted:
        with pytest.raises(BMCAddressError):
            parse_bmc_address(address)
        return
    a = parse_bmc_address(address)
    assert (a.scheme, a.hostname, a.netloc, a.port_text, a.path) == (type_, hostname, netloc, port, path)
    assert {k: [v for key, v in a.query if key == k] for k, _ in a.query} == query
    default = {"ipmi": 623, "https": 443, "http": 80}[a.driver if a.driver == "ipmi" else a.transport]
    assert a.port == (int(port) if port else default)


# ---- TestStaticDriverInfo: the Ironic driver and interfaces each type reports ----
# (address, needs MAC, driver, bios, boot, inspect, firmware, management, power, vendor)
RF, IR, VM = "redfish", "idrac-redfish", "redfish-virtual-media"
INTERFACE_CASES = [
    ("ipmi://192.168.122.1:6233", False, "ipmi", "", "ipxe", "", "", "", "", ""),
    ("libvirt://192.168.122.1", True, "ipmi", "", "ipxe", "", "", "", "", ""),
    ("redfish://192.168.122.1", False, "redfish", "", "ipxe", RF, RF, "", "", ""),
    ("redfish-virtualmedia://192.168.122.1", False, "redfish", "", VM, RF, RF, "", "", ""),
    ("redfish-virtualmedia+http://192.168.122.1", False, "redfish", "", VM, RF, RF, "", "", ""),
    ("redfish-virtualmedia+https://192.168.122.1", False, "redfish", "", VM, RF, RF, "", "", ""),
    ("redfish-uefihttp+https://192.168.122.1", False, "redfish", "", "redfish-https", RF, RF, "", "", ""),
    ("idrac-redfish://192.168.122.1", False, "idrac", IR, "ipxe", RF, RF, IR, IR, IR),
    ("ilo5-virtualmedia://192.168.122.1", False, "redfish", "", VM, RF, RF, "", "", ""),
    ("ilo5-virtualmedia+http://192.168.122.1", False, "redfish", "", VM, RF, RF, "", "", ""),
    ("ilo5-virtualmedia+https://192.168.122.1", False, "redfish", "", VM, RF, RF, "", "", ""),
    (
        "idrac-virtualmedia://192.168.122.1",
        False,
        "idrac",
        IR,
        "idrac-redfish-virtual-media",
        RF,
        RF,
        IR,
        IR,
        IR,
    ),
    (
        "idrac-virtualmedia+http://192.168.122.1",
        False,
        "idrac",
        IR,
        "idrac-redfish-virtual-media",
        RF,
        RF,
        IR,
        IR,
        IR,
    ),
    (
        "idrac-virtualmedia+https://192.168.122.1",
        False,
        "idrac",
        IR,
        "idrac-redfish-virtual-media",
        RF,
        RF,
        IR,
        IR,
        IR,
    ),
]


@pytest.mark.parametrize(
    (
        "address",
        "needs_mac",
        "driver",
        "bios",
        "boot",
        "inspect",
        "firmware",
        "management",
        "power",
        "vendor",
    ),
    INTERFACE_CASES,
)
def test_upstream_static_driver_info(
    address: str,
    needs_mac: bool,
    driver: str,
    bios: str,
    boot: str,
    inspect: str,
    firmware: str,
    management: str,
    power: str,
    vendor: str,
) -> None:
    i = parse_bmc_address(address).interfaces
    got = (
        i.needs_mac,
        i.ironic_driver,
        i.bios,
        i.boot,
        i.inspect,
        i.firmware,
        i.management,
        i.power,
        i.vendor,
    )
    assert got == (needs_mac, driver, bios, boot, inspect, firmware, management, power, vendor)


# ---- TestDriverInfo (certificate verification disabled, as there) ----
NO_VERIFY = {"redfish_verify_ca": False}
DRIVER_INFO_CASES = [
    (
        "ipmi://192.168.122.1",
        {
            "ipmi_port": "623",
            "ipmi_address": "192.168.122.1",
            "ipmi_verify_ca": False,
            "ipmi_priv_level": "ADMINISTRATOR",
        },
    ),
    (
        "ipmi://192.168.122.1?privilegelevel=OPERATOR",
        {
            "ipmi_port": "623",
            "ipmi_address": "192.168.122.1",
            "ipmi_verify_ca": False,
            "ipmi_priv_level": "OPERATOR",
        },
    ),
    (
        "redfish://192.168.122.1/redfish/v1/foo/bar",
        {"redfish_address": "https://192.168.122.1", "redfish_system_id": "/redfish/v1/foo/bar", **NO_VERIFY},
    ),
    (
        "redfish+http://192.168.122.1/foo/bar",
        {"redfish_address": "http://192.168.122.1", "redfish_system_id": "/foo/bar", **NO_VERIFY},
    ),
    (
        "redfish+https://192.168.122.1/foo/bar",
        {"redfish_address": "https://192.168.122.1", "redfish_system_id": "/foo/bar", **NO_VERIFY},
    ),
    (
        "redfish://192.168.122.1:8080/foo/bar",
        {"redfish_address": "https://192.168.122.1:8080", "redfish_system_id": "/foo/bar", **NO_VERIFY},
    ),
    (
        "redfish://[fe80::fc33:62ff:fe83:8a76]/foo/bar",
        {
            "redfish_address": "https://[fe80::fc33:62ff:fe83:8a76]",
            "redfish_system_id": "/foo/bar",
            **NO_VERIFY,
        },
    ),
    (
        "redfish://[fe80::fc33:62ff:fe83:8a76]:8080/foo",
        {
            "redfish_address": "https://[fe80::fc33:62ff:fe83:8a76]:8080",
            "redfish_system_id": "/foo",
            **NO_VERIFY,
        },
    ),
    ("redfish+https://192.168.122.1/", {"redfish_address": "https://192.168.122.1", **NO_VERIFY}),
    ("redfish+https://192.168.122.1/redfish/v1/", {"redfish_address": "https://192.168.122.1", **NO_VERIFY}),
    (
        "redfish-virtualmedia://192.168.122.1/redfish/v1/foo/bar",
        {"redfish_address": "https://192.168.122.1", "redfish_system_id": "/redfish/v1/foo/bar", **NO_VERIFY},
    ),
    (
        "redfish-virtualmedia://192.168.122.1/redfish/v1/",
        {"redfish_address": "https://192.168.122.1", **NO_VERIFY},
    ),
    (
        "ilo5-virtualmedia://192.168.122.1/foo/bar",
        {"redfish_address": "https://192.168.122.1", "redfish_system_id": "/foo/bar", **NO_VERIFY},
    ),
    (
        "idrac-redfish://192.168.122.1/foo/bar",
        {"redfish_address": "https://192.168.122.1", "redfish_system_id": "/foo/bar", **NO_VERIFY},
    ),
    (
        "idrac-virtualmedia://192.168.122.1/redfish/v1/foo/bar",
        {"redfish_address": "https://192.168.122.1", "redfish_system_id": "/redfish/v1/foo/bar", **NO_VERIFY},
    ),
    (
        "idrac-virtualmedia://192.168.122.1/redfish/v1/",
        {"redfish_address": "https://192.168.122.1", **NO_VERIFY},
    ),
]


@pytest.mark.parametrize(("address", "expected"), DRIVER_INFO_CASES)
def test_upstream_driver_info(address: str, expected: dict[str, object]) -> None:
    a = parse_bmc_address(address, disable_certificate_verification=True)
    assert a.driver_info() == expected
    assert a.system_path == expected.get("redfish_system_id"), "the Redfish driver opens this system"


# ---- the webhook's checks that read the parsed type ----
# (address, supports RAID, needs a MAC, supports secure boot, out-of-band inspection)
CAPABILITY_CASES = [
    ("redfish://bmc.example.com", True, False, True, True),
    ("redfish://127.0.1.1", True, False, True, True),
    ("ipmi://127.0.1.1", False, False, False, False),
    ("libvirt://127.0.1.1", False, True, False, False),
    ("idrac-virtualmedia+https://192.168.1.1/redfish/v1/Systems/System.Embedded.1", True, False, True, True),
    ("redfish-virtualmedia+https://192.168.1.1/redfish/v1/Systems/1", True, False, True, True),
    ("redfish://192.168.122.1", True, False, True, True),
    ("idrac-redfish://192.168.122.1", True, False, True, True),
    ("redfish-virtualmedia://192.168.122.1", True, False, True, True),
    ("idrac-virtualmedia://192.168.122.1", True, False, True, True),
    ("ipmi://192.168.122.1:6233", False, False, False, False),
]


@pytest.mark.parametrize(("address", "raid", "needs_mac", "secure_boot", "oob_inspect"), CAPABILITY_CASES)
def test_upstream_capabilities(
    address: str, raid: bool, needs_mac: bool, secure_boot: bool, oob_inspect: bool
) -> None:
    a = parse_bmc_address(address)
    i = a.interfaces
    assert (i.supports_raid, a.needs_mac, i.secure_boot, bool(i.inspect)) == (
        raid,
        needs_mac,
        secure_boot,
        oob_inspect,
    )
    assert (a.system_path or "").startswith("/redfish/v1/Systems/") == ("/Systems/" in address)


def test_the_seven_redfish_types_each_take_http_and_https() -> None:
    """Upstream registers +http and +https for every Redfish type (ilo5-* included)."""
    for name in (
        "redfish",
        "ilo5-redfish",
        "idrac-redfish",
        "redfish-virtualmedia",
        "ilo5-virtualmedia",
        "idrac-virtualmedia",
        "redfish-uefihttp",
    ):
        for suffix, transport in (("", "https"), ("+http", "http"), ("+https", "https")):
            a = parse_bmc_address(f"{name}{suffix}://192.0.2.7:8000/redfish/v1/Systems/1")
            assert (a.scheme, a.transport, a.base_url) == (
                name + suffix,
                transport,
                f"{transport}://192.0.2.7:8000",
            )


# ---- only typed errors: nothing else escapes the parser ----
BAD = [
    "",
    "[fe80::1]",
    "[fe80::1",
    "fe80::1]:623",
    "2001:db8::1",
    "redfish://[fe80::zz]/x",
    "redfish://[1.2.3.4]/x",
    "redfish://[fe80::1%eth0]/x",
    "redfish://h:abc",
    "redfish://h:99999",
    "ipmi://h:-1",
    "ipmi:",
    ":623",
    "::",
    "%",
    "ipmi://%zz",
    "ipmi://h\n",
    " 192.0.2.1",
    "redfish://u:p@h",
    "ipmi://h?privilegelevel=ROOT",
    "redfish://h/%zz",
    "redfish://h#%zz",
    "ilo4://192.0.2.1",
    "irmc://192.0.2.1",
    "http://192.0.2.1",
]


@pytest.mark.parametrize("address", BAD)
def test_bad_addresses_raise_only_the_typed_error(address: str) -> None:
    with pytest.raises(BMCAddressError) as err:
        parse_bmc_address(address)
    assert type(err.value) is BMCAddressError and str(err.value)


def test_random_garbage_gets_a_verdict_never_a_stray_exception() -> None:
    rnd = random.Random(16)
    alphabet = "ab1:/[]@%?#=&;.-+_ fe80:\u00fc\x00" + "0123456789"
    accepted = 0
    for _ in range(5000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 24)))
        for address in (text, "redfish://" + text, "ipmi:" + text):
            try:
                assert isinstance(parse_bmc_address(address), BMCAddress)
                accepted += 1
            except BMCAddressError:
                pass
    assert accepted > 100, "the generator should also reach accepted addresses"


@pytest.mark.parametrize(
    ("address", "verdict"),
    [
        ("[1.2.3.4]:6233", None),  # upstream: host:port fallback, an IPv4 host (Python's urlsplit raises)
        ("ipmi:192.168.122.1", None),
        ("redfish://u:p@h/redfish/v1/Systems/1", "must not carry credentials"),
        ("[fe80::fc33:62ff:fe33:8xff]:6223", "no valid host"),
    ],
)
def test_spec_validation_gives_the_parser_verdict(address: str, verdict: str | None) -> None:
    spec = HostSpec.model_validate(
        {"bmc": {"address": address, "credentials": {"name": "bmc"}}, "bootMACAddress": "52:54:00:00:00:01"}
    )
    if verdict is None:
        validate_spec(spec)
        return
    with pytest.raises(SpecError, match=verdict) as err:
        validate_spec(spec)
    assert str(err.value).startswith("spec.bmc.address: ")
