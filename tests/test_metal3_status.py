"""The status metalflow writes to a BareMetalHost validates against metal3's own status schema.

tests/data/metal3-bmh-status.schema.json is metal3's CRD status schema rebuilt by hand (its
"$comment" names the source commit); objects there are closed, so a field metal3 does not know
fails here instead of being pruned by an API server. The bridge's own status writes (a rejected
manifest, a host waiting for its BMC) go through the same function and are checked too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from k8s_bridge.controller import _plan_status
from k8s_bridge.reconcile import Plan
from metalflow.api.erase import DiskErasure, EraseMethod
from metalflow.api.models import (
    CPU,
    NIC,
    CredentialsStatus,
    ErrorType,
    HardwareDetails,
    HostStatus,
    ImageSpec,
    JoinedNode,
    OperationalStatus,
    ProvisioningState,
    ProvisionStatus,
    SecretRef,
    Storage,
)
from metalflow.api.status import METAL3_EXTENSIONS, bmh_status

SCHEMA = json.loads((Path(__file__).parent / "data" / "metal3-bmh-status.schema.json").read_text())
NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
IMAGE = ImageSpec(url="http://192.0.2.1/os.img", checksum="a" * 64)


def check(doc: dict[str, Any]) -> None:
    """Validate as an API server with upstream's CRD would: metalflow's extensions pruned."""
    doc = json.loads(json.dumps(doc))
    for *parents, field in METAL3_EXTENSIONS:
        holder = doc
        for parent in parents:
            holder = holder.get(parent, {})
        holder.pop(field, None)
    jsonschema.validate(doc, SCHEMA, format_checker=jsonschema.FormatChecker())


def test_the_extensions_are_the_oci_digest_and_the_erasure_record_only_when_set() -> None:
    plain = bmh_status(HostStatus(provisioning=ProvisionStatus(state=ProvisioningState.PROVISIONED)))
    assert "imageDigest" not in plain["provisioning"]
    pinned = HostStatus(
        provisioning=ProvisionStatus(
            state=ProvisioningState.PROVISIONED, image_digest="oci://r.example/os@sha256:" + "a" * 64
        )
    )
    assert bmh_status(pinned)["provisioning"]["imageDigest"].endswith("a" * 64)
    check(bmh_status(pinned))  # what upstream's CRD keeps of it still validates
    assert "erasure" not in plain
    erased = HostStatus(
        erasure=[
            DiskErasure(
                device="/dev/nvme0n1",
                serial="S1",
                method=EraseMethod.NVME_FORMAT,
                verified="blank",
                samples=66,
            )
        ]
    )
    doc = bmh_status(erased)
    assert doc["erasure"] == [
        {
            "device": "/dev/nvme0n1",
            "serial": "S1",
            "sizeBytes": 0,
            "method": "nvmeFormat",
            "result": "erased",
            "verified": "blank",
            "samples": 66,
            "seconds": 0.0,
        }
    ]
    check(doc)


def test_the_joined_node_is_an_extension_with_its_kubeconfig_named_not_located() -> None:
    joined = HostStatus(
        node=JoinedNode(
            name="worker-7",
            provider_id="metalflow://rack-1/worker-7",
            kubeconfig=SecretRef(name="target", namespace="rack-1", path="/var/lib/metalflow/secrets/t.yaml"),
        )
    )
    doc = bmh_status(joined)
    assert doc["node"] == {
        "name": "worker-7",
        "providerID": "metalflow://rack-1/worker-7",
        "kubeconfig": {"name": "target", "namespace": "rack-1"},
    }
    assert "node" not in bmh_status(HostStatus())
    check(doc)


STATUSES = {
    "fresh": HostStatus(),
    "registering": HostStatus(
        last_updated=NOW, provisioning=ProvisionStatus(state=ProvisioningState.REGISTERING)
    ),
    "registered from a local Secret file": HostStatus(
        last_updated=NOW,
        provisioning=ProvisionStatus(state=ProvisioningState.INSPECTING),
        good_credentials=CredentialsStatus(
            credentials=SecretRef(name="bmc", namespace="rack-1", path="/var/lib/metalflow/secrets/bmc.yaml"),
            credentials_version="7",
        ),
    ),
    "registration error": HostStatus(
        last_updated=NOW,
        operational_status=OperationalStatus.ERROR,
        error_type=ErrorType.REGISTRATION,
        error_message="BMC refused the credentials",
        error_count=2,
    ),
    "provisioned, inspected hardware with unknowns": HostStatus(
        last_updated=NOW,
        powered_on=True,
        provisioning=ProvisionStatus(state=ProvisioningState.PROVISIONED, id="host-0", image=IMAGE),
        hardware=HardwareDetails(
            ram_mebibytes=4096,
            cpu=CPU(arch="x86_64", count=2),
            nics=[NIC(name="eth0", mac="52:54:00:00:00:01"), NIC(name="lo")],  # lo has no MAC
            storage=[Storage(name="/dev/vda", size_bytes=1 << 30)],  # type unknown
        ),
        last_attempted_image=IMAGE,
    ),
    "provisioning failed twice": HostStatus(
        last_updated=NOW,
        operational_status=OperationalStatus.ERROR,
        error_type=ErrorType.PROVISIONING,
        error_message="image checksum mismatch",
        provisioning=ProvisionStatus(state=ProvisioningState.PROVISIONING),
        provisioning_fail_count=2,
        last_attempted_image=IMAGE,
    ),
    "externally provisioned": HostStatus(
        last_updated=NOW, provisioning=ProvisionStatus(state=ProvisioningState.EXTERNALLY_PROVISIONED)
    ),
    "powering off before delete": HostStatus(
        last_updated=NOW, provisioning=ProvisionStatus(state=ProvisioningState.POWERING_OFF_BEFORE_DELETE)
    ),
}


@pytest.mark.parametrize("status", STATUSES.values(), ids=STATUSES.keys())
def test_written_status_validates_against_metal3s_schema(status: HostStatus) -> None:
    doc = bmh_status(status)
    check(doc)
    assert "errorType" not in doc or doc["errorType"], "an empty errorType is never written"
    assert doc["provisioningFailCount"] == status.provisioning_fail_count
    if status.last_updated is not None:
        kinds = {c["type"]: c for c in doc["conditions"]}
        assert set(kinds) == {"Manageable", "Provisioned", "Ready"}
        provisioned = status.provisioning.state in (
            ProvisioningState.PROVISIONED,
            ProvisioningState.EXTERNALLY_PROVISIONED,
        )
        assert kinds["Provisioned"]["status"] == ("True" if provisioned else "False")
        if status.operational_status == OperationalStatus.ERROR:
            assert kinds["Ready"] == {**kinds["Ready"], "status": "False", "reason": "Error"}
            assert kinds["Ready"]["message"] == status.error_message


def test_last_attempted_image_and_fail_count_are_written() -> None:
    doc = bmh_status(STATUSES["provisioning failed twice"])
    assert doc["lastAttemptedImage"]["url"] == IMAGE.url and doc["provisioningFailCount"] == 2


def test_the_bridges_own_status_writes_validate() -> None:
    rejected = _plan_status(Plan(status_error="spec.firmware: no longer supported"))
    waiting = _plan_status(Plan(waiting_for_bmc="no spec.bmc"))
    assert rejected is not None and waiting is not None
    check(rejected)
    check(waiting)
    assert rejected["errorType"] == "registration error" and rejected["operationalStatus"] == "error"
    assert waiting["operationalStatus"] == "discovered" and "errorType" not in waiting
    assert waiting["provisioning"]["state"] == "unmanaged"


@pytest.mark.parametrize(
    "bad",
    [
        {"errorType": ""},  # what every status write carried before issue 16
        {"hardwareProfile": 3},
        {"bmcDriver": "redfish"},  # a metalflow-only field would be pruned: never sent
        {
            "conditions": [
                {"type": "Ready", "status": "yes", "reason": "R", "message": "", "lastTransitionTime": "x"}
            ]
        },
    ],
    ids=["empty errorType", "wrong type", "unknown field", "bad condition"],
)
def test_the_schema_has_teeth(bad: dict[str, Any]) -> None:
    doc = {**bmh_status(STATUSES["registering"]), **bad}
    with pytest.raises(jsonschema.ValidationError):
        check(doc)
