"""`metalflow validate FILE [-o yaml|json]`: the real CLI in a subprocess, no Temporal, no disk.

The report's format is documented in `metalflow validate --help` (metalflow/cli/main.py,
VALIDATE_FORMAT) and in the README; these tests hold it to that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from metalflow.api.bmh import FIRMWARE_REFUSED

SECRET_VALUE = "validate-must-not-print-this"
DOCS: list[dict[str, Any]] = [
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bmc"},
        "stringData": {"password": SECRET_VALUE},
    },
    {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": "kept"},
        "spec": {
            "online": True,
            "bmc": {"address": "redfish://192.0.2.5/redfish/v1/Systems/1", "credentialsName": "bmc"},
            "raid": {"softwareRAIDVolumes": [{"level": "1"}]},
            "customDeploy": {"method": "install_coreos"},
            "taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}],
            "inspectionMode": "fast",
            "architecture": "aarch64",
            "hardwareProfile": "libvirt",
        },
    },
    {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": "refused", "namespace": "rack-2"},
        "spec": {
            "online": True,
            "bmc": {"address": "libvirt://192.0.2.6:6233/", "credentialsName": "bmc"},
            "firmware": {"sriovEnabled": True},
        },
    },
    {"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost", "metadata": {"name": "discovered"}},
]


def run(tmp_path: Path, docs: list[dict[str, Any]], *args: str) -> subprocess.CompletedProcess[str]:
    hostfile = tmp_path / "hosts.yaml"
    hostfile.write_text(yaml.safe_dump_all(docs))
    return subprocess.run(
        [sys.executable, "-m", "metalflow", "validate", str(hostfile), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "METALFLOW_TEMPORAL_ADDRESS": "127.0.0.1:1"},  # never dialled
    )


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_report_gives_every_verdict_and_the_kept_spec(tmp_path: Path, fmt: str) -> None:
    done = run(tmp_path, DOCS, "-o", fmt)
    assert done.returncode == 1, done.stderr  # one host rejected
    report = json.loads(done.stdout) if fmt == "json" else yaml.safe_load(done.stdout)
    assert report["apiVersion"] == "metalflow.io/v1alpha1" and report["kind"] == "ValidationReport"
    assert report["summary"] == {"hosts": 3, "accepted": 2, "rejected": 1, "waiting": 1}
    kept, refused, discovered = report["hosts"]
    assert [h["name"] for h in report["hosts"]] == ["kept", "refused", "discovered"]
    assert kept["verdict"] == "accepted" and kept["reasons"] == [] and "waiting" not in kept
    for field in ("raid", "customDeploy", "taints", "inspectionMode", "architecture", "hardwareProfile"):
        assert kept["spec"][field] == DOCS[1]["spec"][field] or field == "raid", field
    assert kept["spec"]["raid"]["softwareRAIDVolumes"][0]["level"] == "1"
    assert kept["spec"]["bmc"]["credentialsName"] == "bmc"
    assert refused == {
        "name": "refused",
        "namespace": "rack-2",
        "verdict": "rejected",
        "reasons": [f"spec.firmware: {FIRMWARE_REFUSED}"],
    }
    assert discovered["verdict"] == "accepted" and "spec.bmc" in discovered["waiting"]
    assert "spec" not in discovered
    assert SECRET_VALUE not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "hosts.yaml"], "validate wrote something"


def test_all_accepted_exits_zero(tmp_path: Path) -> None:
    done = run(tmp_path, DOCS[:2])
    assert done.returncode == 0, done.stdout + done.stderr
    assert yaml.safe_load(done.stdout)["summary"]["rejected"] == 0


def test_several_reasons_are_all_reported(tmp_path: Path) -> None:
    host = {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": "two-faults"},
        "spec": {
            "online": False,
            "disablePowerOff": True,
            "bootMode": "UEFISecureBoot",
            "bmc": {"address": "ipmi://192.0.2.7", "credentialsName": "bmc"},
        },
    }
    done = run(tmp_path, [host], "-o", "json")
    assert done.returncode == 1
    reasons = json.loads(done.stdout)["hosts"][0]["reasons"]
    assert reasons == [
        "spec.bootMode: BMC driver ipmi does not support secure boot",
        "spec.disablePowerOff: node can't simultaneously have online set to false "
        "and have power off disabled",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Secret\nmetadata: {name: x}\n", "holds no BareMetalHost"),
        ("a: [unclosed\n", "cannot be read as YAML"),
    ],
)
def test_unusable_file_exits_two(tmp_path: Path, text: str, message: str) -> None:
    hostfile = tmp_path / "hosts.yaml"
    hostfile.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "metalflow", "validate", str(hostfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
