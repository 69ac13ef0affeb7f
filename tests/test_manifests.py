"""metal3 BareMetalHost manifests and hostfiles become the same HostSpec on every path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from metalflow.api.bmh import ManifestError, host_from_manifest, manifest_from_host
from metalflow.api.models import ImageSpec
from metalflow.client.hostfile import load_hosts

METAL3_EXAMPLE = """
apiVersion: v1
kind: Secret
metadata:
  name: worker-0-bmc-secret
type: Opaque
data:
  username: YWRtaW4=
  password: cGFzc3dvcmQ=
---
apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata:
  name: worker-0
  labels: {role: worker, rack: r1}
spec:
  online: true
  bootMACAddress: 00:11:22:33:44:55
  bootMode: UEFI
  bmc:
    address: redfish+http://192.0.2.10:8000/redfish/v1/Systems/1
    credentialsName: worker-0-bmc-secret
    disableCertificateVerification: true
  rootDeviceHints:
    deviceName: /dev/sda
    minSizeGigabytes: 20
  automatedCleaningMode: metadata
  image:
    url: http://192.0.2.1/images/ubuntu.qcow2
    checksum: http://192.0.2.1/images/ubuntu.qcow2.sha256sum
    checksumType: sha256
    format: qcow2
  userData:
    name: worker-user-data
    namespace: default
  raid:
    hardwareRAIDVolumes: []
"""


def test_metal3_manifest_converts_with_secret_refs(tmp_path: Path) -> None:
    f = tmp_path / "hosts.yaml"
    f.write_text(METAL3_EXAMPLE)
    [host] = load_hosts(f, tmp_path / "secrets")
    assert host.ref.workflow_id == "host/default/worker-0"
    assert host.ref.agent_task_queue == "host-default.worker-0"
    spec = host.spec
    assert spec.boot_mac_address == "00:11:22:33:44:55"
    assert spec.labels == {"role": "worker", "rack": "r1"}
    assert spec.root_device_hints and spec.root_device_hints.min_size_gigabytes == 20
    # the Secret in the file is stored locally (0600) and referenced by path, never inlined
    creds = spec.bmc.credentials
    assert creds.name == "worker-0-bmc-secret" and creds.path
    stored = Path(creds.path)
    assert stored.stat().st_mode & 0o777 == 0o600
    assert "cGFzc3dvcmQ=" in stored.read_text()
    assert "password" not in spec.model_dump_json().replace('"password"', "")
    # userData has no local copy: it refers to the Kubernetes Secret
    assert spec.user_data and spec.user_data.path is None and spec.user_data.name == "worker-user-data"


def test_round_trip_back_to_a_manifest(tmp_path: Path) -> None:
    obj = list(yaml.safe_load_all(METAL3_EXAMPLE))[1]
    host = host_from_manifest(obj)
    again = manifest_from_host(host)
    assert again["spec"]["bmc"]["credentialsName"] == "worker-0-bmc-secret"
    assert host_from_manifest(again).spec == host.spec


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"bootMACAddress": "not-a-mac"}, "bootMACAddress"),
        ({"bmc": {"address": "redfish://x"}}, "credentialsName is required"),
        ({"image": {"url": "ftp://x/y.img", "checksum": "a" * 64}}, "image.url"),
        ({"image": {"url": "http://x/y.img"}}, "image.checksum is required"),
        ({"image": {"url": "http://x/y.img", "checksum": "abc", "checksumType": "sha256"}}, "needs 64"),
        ({"image": {"url": "http://x/y.img", "checksum": "a" * 64, "checksumType": "sha1"}}, "checksumType"),
        ({"rootDeviceHints": {"minSizeGigabytes": -1}}, "minSizeGigabytes"),
        ({"automatedCleaningMode": "sometimes"}, "automatedCleaningMode"),
    ],
)
def test_bad_manifest_names_the_field(patch: dict, message: str) -> None:
    obj = list(yaml.safe_load_all(METAL3_EXAMPLE))[1]
    obj["spec"].update(patch)
    with pytest.raises(ManifestError, match=message):
        host_from_manifest(obj)


def test_duplicate_boot_mac_is_rejected(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(METAL3_EXAMPLE))
    other = yaml.safe_load(yaml.safe_dump(docs[1]))
    other["metadata"]["name"] = "worker-1"
    f = tmp_path / "hosts.yaml"
    f.write_text(yaml.safe_dump_all([*docs, other]))
    with pytest.raises(ManifestError, match="00:11:22:33:44:55 is used by both"):
        load_hosts(f, tmp_path / "secrets")


def test_image_checksum_auto_infers_from_length() -> None:
    ImageSpec(url="http://x/y", checksum="a" * 128)
    with pytest.raises(ValidationError, match="matches no supported digest"):
        ImageSpec(url="http://x/y", checksum="a" * 40)


def test_the_join_kubeconfig_secret_in_the_hostfile_is_found_like_the_others(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(METAL3_EXAMPLE))
    target = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "target"},
        "stringData": {"kubeconfig": "{}"},
    }
    docs[1]["spec"]["join"] = {"kubeconfig": {"name": "target"}, "nodeLabels": {"role": "worker"}}
    f = tmp_path / "hosts.yaml"
    f.write_text(yaml.safe_dump_all([*docs, target]))
    [host] = load_hosts(f, tmp_path / "secrets")
    assert host.spec.join is not None
    ref = host.spec.join.kubeconfig
    assert (ref.name, ref.namespace) == ("target", "default") and ref.path, ref
    assert Path(ref.path).read_text() and Path(ref.path).stat().st_mode & 0o777 == 0o600
    docs[1]["spec"]["join"]["kubeconfig"] = {"name": "target", "namespace": "elsewhere"}
    with pytest.raises(ManifestError, match=r"spec.join.kubeconfig: cross-namespace"):
        host_from_manifest(docs[1])
