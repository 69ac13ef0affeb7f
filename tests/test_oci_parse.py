"""The pure side of oci:// images: the URL, metal3's image.ociAuthSecretName, Ironic's choice of a
manifest from an index and of the one layer, and the Bearer challenge (registry 2.8 with htpasswd
answers Basic only; the token flow is checked against a real registry in test_oci.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities.status import bmh_status
from metalflow.api.bmh import host_from_manifest, manifest_from_host
from metalflow.api.models import HostStatus, ImageFormat, ImageSpec, ProvisionStatus
from metalflow.api.oci import candidates, disk_layer
from metalflow.api.oci_ref import parse_oci_url

D = "sha256:" + "a" * 64
E = "sha256:" + "b" * 64
REF = parse_oci_url("oci://quay.io/metal/disk:v1")


@pytest.mark.parametrize(
    ("url", "registry", "repository", "tag", "digest", "reference"),
    [
        ("oci://quay.io/metal/disk", "quay.io", "metal/disk", None, None, "latest"),
        ("oci://127.0.0.1:5000/a/b/c:v1.2_x", "127.0.0.1:5000", "a/b/c", "v1.2_x", None, "v1.2_x"),
        (f"oci://reg.example/disk@{D}", "reg.example", "disk", None, D, D),
        (f"oci://reg.example/disk:v1@{D}", "reg.example", "disk", "v1", D, D),  # the digest wins
        (f"oci://reg.example/disk:@{D}", "reg.example", "disk", None, D, D),  # Ironic's doc writes this
        ("oci://[::1]:5000/my-repo/disk__x:t", "[::1]:5000", "my-repo/disk__x", "t", None, "t"),
    ],
)
def test_oci_urls(
    url: str, registry: str, repository: str, tag: str | None, digest: str | None, reference: str
) -> None:
    ref = parse_oci_url(url)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.reference) == (
        registry,
        repository,
        tag,
        digest,
        reference,
    )
    assert ImageSpec(url=url).url == url


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("oci://quay.io", "repository ''"),
        ("oci:///disk", "no registry host"),
        ("oci://quay.io/Metal/Disk", "lower-case"),
        ("oci://quay.io/metal/disk:-bad", "tag '-bad'"),
        ("oci://quay.io/metal/disk@sha256:abc", "pin with @sha256:<64 hex digits>"),
        ("oci://quay.io/metal/disk@md5:" + "a" * 32, "not a sha256 digest"),
    ],
)
def test_bad_oci_urls_name_the_part_and_the_fix(url: str, names: str) -> None:
    with pytest.raises(ValidationError) as err:
        ImageSpec(url=url)
    assert names in str(err.value) and "image.url" in str(err.value)


def test_checksum_and_live_iso_do_not_go_with_oci_and_oci_auth_only_with_oci() -> None:
    with pytest.raises(ValidationError, match="takes its checksum from the registry"):
        ImageSpec(url="oci://quay.io/metal/disk:v1", checksum="a" * 64)
    with pytest.raises(ValidationError, match="live-iso"):
        ImageSpec(url="oci://quay.io/metal/disk:v1", format=ImageFormat.LIVE_ISO)
    with pytest.raises(ValidationError, match="ociAuthSecretName is for oci:// images only"):
        ImageSpec.model_validate({"url": "http://x/y.img", "checksum": "a" * 64, "ociAuth": {"name": "pull"}})
    with pytest.raises(ValidationError, match="http://, https://, file:// or oci://"):
        ImageSpec(url="docker://quay.io/metal/disk", checksum="a" * 64)


def test_metal3_oci_auth_secret_name_becomes_a_reference_and_back() -> None:
    obj = {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": "h0", "namespace": "lab"},
        "spec": {
            "online": True,
            "bmc": {"address": "redfish://10.0.0.1/redfish/v1/Systems/1", "credentialsName": "bmc"},
            "image": {"url": "oci://quay.io/metal/disk:v1", "ociAuthSecretName": "pull-secret"},
        },
    }
    host = host_from_manifest(obj)
    assert host.spec.image is not None and host.spec.image.oci_auth is not None
    assert (host.spec.image.oci_auth.name, host.spec.image.oci_auth.namespace) == ("pull-secret", "lab")
    back = manifest_from_host(host)
    assert (
        back["spec"]["image"]["ociAuthSecretName"] == "pull-secret" and "ociAuth" not in back["spec"]["image"]
    )
    assert host_from_manifest(back).spec == host.spec
    status = HostStatus(
        provisioning=ProvisionStatus(image=host.spec.image, image_digest=f"oci://quay.io/metal/disk@{D}")
    )
    published = bmh_status(status)["provisioning"]
    assert published["image"] == back["spec"]["image"] and published["imageDigest"].endswith(D)


def entry(digest: str, arch: str | None, disktype: str | None) -> dict[str, Any]:
    e: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest,
        "size": 1,
    }
    if arch:
        e["platform"] = {"architecture": arch, "os": "linux"}
    if disktype:
        e["annotations"] = {"disktype": disktype}
    return e


def test_an_index_prefers_raw_then_qcow2_then_no_disktype_for_the_hosts_architecture() -> None:
    d = [f"sha256:{c * 64}" for c in "0123456"]
    index = {
        "manifests": [
            entry(d[0], "amd64", None),
            entry(d[1], "arm64", "raw"),  # other architecture
            entry(d[2], "amd64", "qcow2"),
            entry(d[3], "x86_64", "applehv"),  # x86_64 spelled as quay.io artefacts often do
            entry(d[4], "amd64", "vhdx"),  # a disk type the writer cannot use
            entry(d[5], None, "raw"),  # no platform: any host
        ]
    }
    got = candidates(index, REF, "x86_64")
    assert [c.digest for c in got] == [d[5], d[3], d[2], d[0]]
    assert [c.format for c in got] == [ImageFormat.RAW, ImageFormat.RAW, ImageFormat.QCOW2, None]
    assert [c.digest for c in candidates(index, REF, "aarch64")] == [d[1], d[5]]
    only_arm = {"manifests": [entry(d[1], "arm64", "raw"), entry(d[2], "s390x", "raw")]}
    with pytest.raises(ApplicationError) as err:
        candidates(only_arm, REF, "x86_64")
    assert err.value.type == "OciImageNotFound" and "arm64, s390x" in err.value.message


def manifest(*layers: tuple[str, str], disktype: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"layers": [{"mediaType": mt, "digest": dg, "size": 10} for mt, dg in layers]}
    if disktype:
        doc["annotations"] = {"disktype": disktype}
    return doc


@pytest.mark.parametrize(
    ("media_type", "compression"),
    [
        ("application/octet-stream", ""),
        ("application/vnd.oci.image.layer.v1.tar", ""),  # oras push's default for a file
        ("application/gzip", "gzip"),
        ("application/vnd.oci.image.layer.v1.tar+gzip", "gzip"),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"),
    ],
)
def test_layer_media_types_the_writer_takes(media_type: str, compression: str) -> None:
    layer = disk_layer(manifest((media_type, D), disktype="qcow2"), REF)
    assert (layer.digest, layer.compression, layer.format, layer.size_bytes) == (
        D,
        compression,
        ImageFormat.QCOW2,
        10,
    )


@pytest.mark.parametrize(
    "media_type",
    [
        "application/zstd",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/x-xz",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    ],
)
def test_layer_media_types_refused_with_the_fix(media_type: str) -> None:
    with pytest.raises(ApplicationError) as err:
        disk_layer(manifest((media_type, D)), REF)
    assert err.value.type == "OciUnsupportedMediaType" and media_type in err.value.message
    assert str(REF) in err.value.message and "push" in err.value.message


def test_container_images_and_empty_manifests_are_not_disk_images() -> None:
    with pytest.raises(ApplicationError) as err:
        disk_layer(manifest(("application/vnd.oci.image.layer.v1.tar+gzip", D), ("x", E)), REF)
    assert err.value.type == "OciNotADiskImage"
    assert "2 layers: this is a container image, not a disk image" in err.value.message
    with pytest.raises(ApplicationError, match="has no layers"):
        disk_layer({"layers": []}, REF)
    with pytest.raises(ApplicationError, match="not sha256"):
        disk_layer(manifest(("application/octet-stream", "sha512:" + "a" * 128)), REF)
