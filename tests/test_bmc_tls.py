"""BMC TLS (issue 27, item 5): a Redfish BMC on HTTPS with a certificate from a test CA
(sushy-emulator's own TLS, testbed/tls.py). `disableCertificateVerification: false` really
verifies: against METALFLOW_BMC_CA_BUNDLE the host registers; against another CA, or the system's
trust store, registration fails with a typed error that names the fix, and no BMC call succeeds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from test_lifecycle import wait_status

from activities.bmc.redfish import _verify
from metalflow.api.bmc_address import parse_bmc_address
from metalflow.api.errors import ErrorName
from metalflow.api.models import BMCDetails, ErrorType, Host, HostRef, HostSpec, SecretRef
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import write_secret
from testbed.sushy import FakeSystem, SushyEmulator, start_sushy
from testbed.tls import TestCA
from worker.control import build_worker


@pytest.fixture
def cas(tmp_path: Path) -> tuple[TestCA, TestCA]:
    return TestCA(tmp_path / "bmc-ca", "BMC vendor CA"), TestCA(tmp_path / "other-ca", "some other CA")


@pytest.fixture
def https_bmc(tmp_path: Path, cas: tuple[TestCA, TestCA]) -> Iterator[tuple[SushyEmulator, list[FakeSystem]]]:
    systems = [
        FakeSystem(uuid=str(uuid.uuid4()), name=f"tls-{i}", mac=f"52:54:00:aa:00:0{i}") for i in range(3)
    ]
    emu = start_sushy(tmp_path / "sushy", systems, "admin", "s3cret-bmc", tls=cas[0].issue("bmc"))
    try:
        yield emu, systems
    finally:
        emu.stop()


def host_on(emu: SushyEmulator, system: FakeSystem, ns: str, secret: SecretRef) -> Host:
    address = emu.system_address(system.uuid)
    assert address.startswith("redfish+https://")
    spec = HostSpec(
        bmc=BMCDetails(address=address, credentials=secret), boot_mac_address=system.mac, online=False
    )
    return Host(ref=HostRef(namespace=ns, name=system.name), spec=spec)


async def test_a_bmc_certificate_is_verified_against_the_configured_ca(
    client: Client,
    settings: Settings,
    ns: str,
    tmp_path: Path,
    cas: tuple[TestCA, TestCA],
    https_bmc: tuple[SushyEmulator, list[FakeSystem]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu, systems = https_bmc
    secret = SecretRef(name="bmc", namespace=ns, path=str(tmp_path / "bmc.yaml"))
    write_secret(Path(str(secret.path)), {"username": "admin", "password": "s3cret-bmc"})
    good, wrong, system_store = (host_on(emu, s, ns, secret) for s in systems)
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with build_worker(client, settings, executor):
            # the worker reads the bundle per connection: one worker, three trust settings
            monkeypatch.setenv("METALFLOW_BMC_CA_BUNDLE", str(cas[1].cert))
            await operations.apply(client, wrong, settings)
            st = await wait_status(client, wrong.ref, lambda s: s.error_type is not None, timeout=60)
            assert st.error_type == ErrorType.REGISTRATION
            assert st.error_message.startswith("the BMC at https://127.0.0.1:")
            assert st.error_message.endswith(f"({ErrorName.BMC_TLS.value})")
            assert (
                "does not trust (certificate verify failed: unable to get local issuer certificate); "
                "set METALFLOW_BMC_CA_BUNDLE to the CA that signed it, or "
                "spec.bmc.disableCertificateVerification" in st.error_message
            )
            assert "s3cret-bmc" not in st.error_message

            monkeypatch.delenv("METALFLOW_BMC_CA_BUNDLE")
            await operations.apply(client, system_store, settings)
            st = await wait_status(client, system_store.ref, lambda s: s.error_type is not None, timeout=60)
            assert st.error_type == ErrorType.REGISTRATION and "does not trust" in st.error_message

            monkeypatch.setenv("METALFLOW_BMC_CA_BUNDLE", str(cas[0].cert))
            await operations.apply(client, good, settings)
            st = await wait_status(
                client, good.ref, lambda s: s.error_type is not None or s.good_credentials.credentials_version
            )
            assert st.error_type is None, st.error_message
            assert st.provisioning.state != S.REGISTERING


def test_a_bad_bundle_is_named_before_any_bmc_is_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    addr = parse_bmc_address("redfish+https://10.0.0.1/redfish/v1/Systems/1")
    for path, says in (
        (tmp_path / "missing.pem", "cannot read it"),
        (tmp_path / "empty.pem", "no PEM certificate"),
    ):
        if path.name == "empty.pem":
            path.write_text("hello\n")
        monkeypatch.setenv("METALFLOW_BMC_CA_BUNDLE", str(path))
        with pytest.raises(ApplicationError) as err:
            _verify(addr)
        assert err.value.type == ErrorName.BMC_TLS and err.value.non_retryable
        assert f"METALFLOW_BMC_CA_BUNDLE={path}: {says}" in err.value.message
    # verification off for this host: the bundle is not even read
    assert _verify(parse_bmc_address("redfish+https://10.0.0.1/redfish/v1/Systems/1", True)) is False
