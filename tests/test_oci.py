"""oci:// images against a real registry on loopback (docker-registry 2.8, images pushed with skopeo).

The whole path a deploy takes, minus the VM: `oci.stage` (control plane: resolve the tag, the
index, the layer; grant the blob) -> the boot server (pulls the blob with the credentials) ->
the agent's writer (streams it onto the disk, sha256 of the layer checked while writing). Every
error leaves the disk as it was (`untouched`), except a digest mismatch found at the end of a
raw stream, which leaves it wiped (never a bootable half image).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
import requests
import test_bad_input as bad_input
from fixtures.registry import REGISTRY_PASSWORD, REGISTRY_USER
from history_scan import assert_no_secret_in, assert_no_secret_in_histories
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from test_bad_input import OldDisk, fails, untouched
from test_lifecycle import wait_status
from tests_support import activity_results, step_histories

from activities.agent import AgentActivities
from activities.boot import agent_tokens
from activities.oci import remove_oci, stage_oci
from metalflow.api.models import HostRef, ImageFormat, ImageSpec, RootDeviceHints, SecretRef
from metalflow.api.models import ProvisioningState as S
from metalflow.api.oci import OCI_STAGE, OciRemove, OciStaged, OciStageRequest, write_request
from metalflow.api.oci_ref import parse_oci_url
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter, write_secret
from testbed.images import BuiltImage, build_raw_image, convert_to_qcow2, sha256_of
from testbed.processes import free_port
from testbed.registry import TAR_LAYER, Layout, Registry, gzipped, push
from worker.boot_server import start_boot_server
from worker.control import build_worker

HOST = HostRef(name="h0")
HINTS = RootDeviceHints(device_name="sda")
OCTET = "application/octet-stream"


@dataclass(frozen=True)
class Images:
    raw: BuiltImage
    arm: BuiltImage
    qcow2: BuiltImage
    raw_manifest: str  # the manifest digest `disk/raw:v1` names


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Images:
    """Every test image, pushed once into the anonymous registry."""
    work = tmp_path_factory.mktemp("oci-images")
    raw = build_raw_image(work / "raw.img", size_mib=8, label="oci-amd64")
    arm = build_raw_image(work / "arm.img", size_mib=4, label="oci-arm64")
    qcow2 = convert_to_qcow2(raw, work / "disk.qcow2")
    lay = Layout(work / "layout")
    raw_desc = lay.manifest([(raw.path.read_bytes(), OCTET)], disktype="raw")
    lay.tag("raw", raw_desc)
    lay.tag("qcow2", lay.manifest([(qcow2.path.read_bytes(), OCTET)], disktype="qcow2"))
    lay.tag("gzip", lay.manifest([(gzipped(raw.path.read_bytes()), "application/gzip")]))
    half = len(raw.path.read_bytes()) // 2  # two gzip members back to back, as pigz --independent writes
    members = gzipped(raw.path.read_bytes()[:half]) + gzipped(raw.path.read_bytes()[half:])
    lay.tag("gzip-members", lay.manifest([(members, "application/gzip")], disktype="raw"))
    lay.tag("gzip-cut", lay.manifest([(gzipped(raw.path.read_bytes())[:-4096], "application/gzip")]))
    lay.tag("gzip-qcow2", lay.manifest([(gzipped(qcow2.path.read_bytes()), TAR_LAYER + "+gzip")]))
    lay.tag("zstd", lay.manifest([(b"(\xb5/\xfd not really zstd", "application/zstd")]))
    arm_desc = lay.manifest([(arm.path.read_bytes(), OCTET)], disktype="raw")
    lay.tag("multi", lay.index([(raw_desc, "amd64", "raw"), (arm_desc, "arm64", "raw")]))
    container = lay.manifest([(b"layer one tar", TAR_LAYER), (b"layer two tar", TAR_LAYER)], container=True)
    lay.tag("container", container)
    # an index whose only amd64 entry is a container image: nothing for this host to write
    lay.tag("container-index", lay.index([(container, "amd64", None), (arm_desc, "arm64", "raw")]))
    for tag in lay.refs:
        push(lay, tag, registry, f"disk/{tag}")
    return Images(raw, arm, qcow2, raw_desc["digest"])


@pytest.fixture(scope="module")
def boot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The real boot server (aiohttp) in a thread: (boot dir, URL)."""
    boot = tmp_path_factory.mktemp("boot")
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runners: list[Any] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        runners.append(loop.run_until_complete(start_boot_server("127.0.0.1", port, boot)))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30), "the boot server did not start"
    yield boot, f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runners[0].cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


@pytest.fixture
def env(boot_server: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(boot_server[0]))
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_URL", boot_server[1])
    return boot_server


def stage(url: str, arch: str = "x86_64", auth: SecretRef | None = None) -> OciStaged:
    req = OciStageRequest(host=HOST, image=ImageSpec(url=url, oci_auth=auth), architecture=arch, attempt="a1")
    staged: OciStaged = ActivityEnvironment().run(stage_oci, req)
    return staged


def deploy(
    a: AgentActivities, url: str, arch: str = "x86_64", auth: SecretRef | None = None
) -> tuple[OciStaged, Any]:
    """What DeployHost does for an oci:// image: stage, then the agent writes the granted blob."""
    staged = stage(url, arch, auth)
    written = ActivityEnvironment().run(a.write_image, write_request(staged, HINTS))
    return staged, written


def agent_with_old_os(tmp_path: Path) -> tuple[AgentActivities, OldDisk]:
    """test_bad_input's agent, booted: holding its boot's agent token, which opens the grant."""
    a, disk = bad_input.agent_with_old_os(tmp_path)
    token = agent_tokens.issue(Path(os.environ["METALFLOW_BOOT_DIR"]), HOST.host_id, agent_tokens.Medium.ISO)
    a.config = a.config.model_copy(
        update={"token": SecretStr(token.value), "boot_server": os.environ["METALFLOW_BOOT_SERVER_URL"]}
    )
    return a, disk


def subdir(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).mkdir()
    return tmp_path / name


def on_disk(disk: OldDisk, image: BuiltImage) -> bool:
    with disk.path.open("rb") as f:
        return f.read(image.size) == image.path.read_bytes()


def dockerconfig(tmp_path: Path, registry: str, user: str, password: str) -> SecretRef:
    """A kubernetes.io/dockerconfigjson Secret (as a file), as `kubectl create secret docker-registry`
    makes it."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path = tmp_path / "pull-secret.yaml"
    write_secret(path, {".dockerconfigjson": json.dumps({"auths": {registry: {"auth": auth}}})})
    return SecretRef(name="pull-secret", path=str(path))


def url(registry: Registry, repo: str) -> str:
    return f"oci://{registry.host}/{repo}"


# ---- anonymous pulls: by tag, by digest, raw, qcow2, gzip, index ----
def test_raw_image_by_tag_is_streamed_and_its_manifest_digest_recorded(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str]
) -> None:
    a, disk = agent_with_old_os(tmp_path)
    staged, written = deploy(a, url(registry, "disk/raw:raw"))
    assert on_disk(disk, images.raw)
    assert written.checksum == images.raw.sha256 and written.bytes_written == images.raw.size
    assert staged.resolved.manifest_digest == images.raw_manifest
    assert staged.resolved.pinned_url == f"oci://{registry.host}/disk/raw@{images.raw_manifest}"
    assert staged.resolved.layer.digest == f"sha256:{images.raw.sha256}"
    assert staged.url.startswith(env[1] + "/oci/") and registry.host not in staged.url


def test_a_digest_in_the_url_pins_the_manifest(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str]
) -> None:
    a, disk = agent_with_old_os(tmp_path)
    staged, _ = deploy(a, url(registry, f"disk/raw@{images.raw_manifest}"))
    assert on_disk(disk, images.raw) and staged.resolved.manifest_digest == images.raw_manifest


def test_qcow2_layer_is_converted_onto_the_disk(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str]
) -> None:
    a, disk = agent_with_old_os(tmp_path)
    staged, written = deploy(a, url(registry, "disk/qcow2:qcow2"))
    assert staged.resolved.layer.format == ImageFormat.QCOW2
    assert written.checksum == images.qcow2.sha256, "the checksum is the layer's (the qcow2 file's) digest"
    assert on_disk(disk, images.raw)


def test_gzip_layers_are_inflated_while_the_compressed_bytes_are_hashed(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str]
) -> None:
    a, disk = agent_with_old_os(tmp_path)
    staged, written = deploy(a, url(registry, "disk/gzip:gzip"))
    assert staged.resolved.layer.compression == "gzip"
    assert written.checksum == staged.resolved.layer.digest.removeprefix("sha256:") != images.raw.sha256
    assert on_disk(disk, images.raw)
    a, disk = agent_with_old_os(subdir(tmp_path, "m"))
    staged, _ = deploy(a, url(registry, "disk/gzip-members:gzip-members"))
    assert staged.resolved.layer.compression == "gzip" and on_disk(disk, images.raw)
    a, disk = agent_with_old_os(subdir(tmp_path, "q"))
    staged, _ = deploy(a, url(registry, "disk/gzip-qcow2:gzip-qcow2"))
    assert staged.resolved.layer.compression == "gzip" and on_disk(disk, images.raw)


def test_an_index_is_resolved_by_the_hosts_architecture(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str]
) -> None:
    a, disk = agent_with_old_os(tmp_path)
    staged, _ = deploy(a, url(registry, "disk/multi:multi"))  # x86_64 is amd64
    assert on_disk(disk, images.raw) and staged.resolved.manifest_digest == images.raw_manifest
    a, disk = agent_with_old_os(subdir(tmp_path, "arm"))
    staged, _ = deploy(a, url(registry, "disk/multi:multi"), arch="aarch64")  # aarch64 is arm64
    assert on_disk(disk, images.arm) and staged.resolved.layer.digest == f"sha256:{images.arm.sha256}"


# ---- refusals and errors: typed, naming the image and the fix, disk untouched ----
def test_no_manifest_for_the_architecture(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str]
) -> None:
    err = fails(
        stage_oci,
        OciStageRequest(
            host=HOST, image=ImageSpec(url=url(registry, "disk/multi:multi")), architecture="ppc64le"
        ),
    )
    assert err.type == "OciImageNotFound" and "ppc64le" in err.message and "amd64, arm64" in err.message


def test_a_gzip_layer_cut_short_is_refused_though_its_digest_matches(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str]
) -> None:
    """The publisher pushed a truncated .gz: the registry's digest is of those bytes, so only the
    missing end-of-stream marker tells; the raw image half written is wiped, never left bootable."""
    a, disk = agent_with_old_os(tmp_path)
    staged = stage(url(registry, "disk/gzip-cut:gzip-cut"))
    err = fails(a.write_image, write_request(staged, HINTS))
    assert err.type == "ImageFormatError" and "cut-off" in err.message and "wiped" in err.message
    with disk.path.open("rb") as f:
        assert f.read(4096) == bytes(4096)


@pytest.mark.parametrize("tag", ["container", "container-index"])
def test_a_container_image_is_refused(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str], tag: str
) -> None:
    _, disk = agent_with_old_os(tmp_path)
    err = stage_fails(url(registry, f"disk/{tag}:{tag}"))
    assert err.type == "OciNotADiskImage"
    assert "this is a container image, not a disk image" in err.message and "oras push" in err.message
    assert f"disk/{tag}" in err.message and untouched(disk)


def test_a_layer_the_agent_cannot_decompress_is_refused(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str]
) -> None:
    err = stage_fails(url(registry, "disk/zstd:zstd"))
    assert err.type == "OciUnsupportedMediaType" and "application/zstd" in err.message
    assert "uncompressed or gzip" in err.message


@pytest.mark.parametrize("repo", ["disk/raw:nope", "disk/nothing:v1", f"disk/raw@sha256:{'0' * 64}"])
def test_unknown_tag_repository_or_digest(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str], repo: str
) -> None:
    _, disk = agent_with_old_os(tmp_path)
    err = stage_fails(url(registry, repo))
    assert err.type == "OciImageNotFound" and "fix spec.image.url" in err.message
    assert str(parse_oci_url(url(registry, repo))) in err.message and untouched(disk)


def test_a_corrupted_blob_fails_the_digest_check_and_leaves_no_bootable_image(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str]
) -> None:
    """The registry serves what its storage holds: flip one byte of the layer on disk."""
    lay = Layout(tmp_path / "layout")
    data = build_raw_image(tmp_path / "victim.img", size_mib=2, label="victim").path.read_bytes()
    lay.tag("victim", lay.manifest([(data, OCTET)], disktype="raw"))
    push(lay, "victim", registry, "disk/victim")
    blob = registry.blob_file("sha256:" + sha256_of(tmp_path / "victim.img"))
    bad = bytearray(blob.read_bytes())
    bad[len(bad) // 2] ^= 0xFF
    blob.write_bytes(bytes(bad))
    a, disk = agent_with_old_os(tmp_path)
    staged = stage(url(registry, "disk/victim:victim"))
    err = fails(a.write_image, write_request(staged, HINTS))
    assert err.type == "ImageChecksumMismatch" and "wiped" in err.message
    with disk.path.open("rb") as f:
        assert f.read(4096) == bytes(4096), (
            "a raw stream found wrong at its end is wiped, never left bootable"
        )


@pytest.mark.parametrize("by", ["digest", "tag"])
def test_a_manifest_that_does_not_hash_to_its_digest_is_refused(
    tmp_path: Path, registry: Registry, images: Images, env: tuple[Path, str], by: str
) -> None:
    """The registry serves what its storage holds (with the digest it was stored under): a
    manifest edited there must not pass for the pinned (or tag-resolved) one."""
    lay = Layout(tmp_path / "layout")
    desc = lay.manifest([(b"an image of its own " + by.encode(), OCTET)], disktype="raw")
    lay.tag("edited", desc)
    push(lay, "edited", registry, f"disk/edited-{by}")
    stored = registry.blob_file(desc["digest"])
    stored.write_bytes(stored.read_bytes().replace(b'"raw"', b'"qcow2"'))
    _, disk = agent_with_old_os(tmp_path)
    ref = desc["digest"] if by == "digest" else "edited"
    err = stage_fails(url(registry, f"disk/edited-{by}{'@' if by == 'digest' else ':'}{ref}"))
    assert (
        err.type == "ImageChecksumMismatch" and desc["digest"] in err.message and "hashes to" in err.message
    )
    assert untouched(disk)


# ---- credentials: htpasswd (Basic) from a dockerconfigjson Secret ----
@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, auth_registry: Registry) -> BuiltImage:
    work = tmp_path_factory.mktemp("private")
    img = build_raw_image(work / "private.img", size_mib=4, label="private")
    lay = Layout(work / "layout")
    lay.tag("v1", lay.manifest([(img.path.read_bytes(), OCTET)], disktype="raw"))
    push(lay, "v1", auth_registry, "private/disk")
    return img


def test_basic_auth_from_a_dockerconfigjson_secret(
    tmp_path: Path, auth_registry: Registry, private: BuiltImage, env: tuple[Path, str]
) -> None:
    a, disk = agent_with_old_os(tmp_path)
    secret = dockerconfig(tmp_path, auth_registry.host, REGISTRY_USER, REGISTRY_PASSWORD)
    staged, _ = deploy(a, url(auth_registry, "private/disk:v1"), auth=secret)
    assert on_disk(disk, private)
    assert REGISTRY_PASSWORD not in staged.model_dump_json(), "credentials stay out of the workflow"
    grant = next((env[0] / "oci" / HOST.host_id).glob("a1.*.json")).read_text()
    assert REGISTRY_PASSWORD not in grant and "pull-secret" in grant, (
        "the grant names the Secret, not its value"
    )
    left = ActivityEnvironment().run(
        stage_oci,
        OciStageRequest(host=HOST, image=ImageSpec(url=staged.resolved.image, oci_auth=secret)).model_copy(
            update={"attempt": "old"}
        ),
    )
    again = stage(
        url(auth_registry, "private/disk:v1"), auth=secret
    )  # a newer attempt sweeps the older grant
    token = agent_tokens.current(Path(os.environ["METALFLOW_BOOT_DIR"]), HOST.host_id)
    assert token is not None
    mine = {"Authorization": f"Bearer {token.value}"}
    assert requests.get(left.url, headers=mine, timeout=10).status_code == 404
    assert requests.head(again.url, headers=mine, timeout=10).ok
    assert requests.head(again.url, timeout=10).status_code == 401, "the grant opens only to the token"
    ActivityEnvironment().run(remove_oci, OciRemove(host=HOST, attempt="a1"))
    assert not list((env[0] / "oci").glob(f"{HOST.host_id}/*")), "the grant is withdrawn after the attempt"


def test_bad_credentials_and_none_at_all(
    tmp_path: Path, auth_registry: Registry, private: BuiltImage, env: tuple[Path, str]
) -> None:
    _, disk = agent_with_old_os(tmp_path)
    wrong = "not-the-password-41"
    bad = dockerconfig(tmp_path, auth_registry.host, REGISTRY_USER, wrong)
    err = stage_fails(url(auth_registry, "private/disk:v1"), auth=bad, secrets=[wrong, REGISTRY_PASSWORD])
    assert err.type == "OciAuthError" and "fix the username/password" in err.message
    err = stage_fails(url(auth_registry, "private/disk:v1"))
    assert err.type == "OciAuthError" and "set image.ociAuthSecretName" in err.message
    other = dockerconfig(tmp_path, "registry.example:5000", REGISTRY_USER, REGISTRY_PASSWORD)
    err = stage_fails(url(auth_registry, "private/disk:v1"), auth=other, secrets=[REGISTRY_PASSWORD])
    assert (
        err.type == "SecretInvalid"
        and auth_registry.host in err.message
        and "registry.example:5000" in err.message
    )
    assert untouched(disk)


def test_bearer_tokens_from_the_registrys_realm(
    tmp_path: Path, token_registry: Registry, env: tuple[Path, str]
) -> None:
    """The registry's challenge names a realm; the token asked there (with the Secret's password)
    carries the pull scope, and the real registry checks its signature, issuer and scope."""
    assert token_registry.tokens is not None
    img = build_raw_image(tmp_path / "tok.img", size_mib=2, label="token")
    lay = Layout(tmp_path / "layout")
    lay.tag("v1", lay.manifest([(img.path.read_bytes(), OCTET)], disktype="raw"))
    push(lay, "v1", token_registry, "bearer/disk")
    a, disk = agent_with_old_os(tmp_path)
    token_registry.tokens.issued.clear()
    secret = dockerconfig(tmp_path, token_registry.host, REGISTRY_USER, REGISTRY_PASSWORD)
    deploy(a, url(token_registry, "bearer/disk:v1"), auth=secret)
    assert on_disk(disk, img)
    assert token_registry.tokens.issued and set(token_registry.tokens.issued) == {
        "repository:bearer/disk:pull"
    }
    _, disk = agent_with_old_os(subdir(tmp_path, "bad"))
    bad = dockerconfig(subdir(tmp_path, "s"), token_registry.host, REGISTRY_USER, "wrong-token-pw")
    err = stage_fails(url(token_registry, "bearer/disk:v1"), auth=bad, secrets=["wrong-token-pw"])
    assert err.type == "OciAuthError" and "fix the username/password" in err.message and untouched(disk)


def stage_fails(
    image_url: str, auth: SecretRef | None = None, secrets: list[str] | None = None
) -> ApplicationError:
    req = OciStageRequest(host=HOST, image=ImageSpec(url=image_url, oci_auth=auth), attempt="a1")
    return fails(stage_oci, req, secrets=secrets or [])


# ---- a host through its whole lifecycle: Temporal, the BMC emulator, the agent, the boot server ----
@pytest_asyncio.fixture
async def dc(client: Client, settings: Settings, ns: str) -> AsyncIterator[Datacenter]:
    async with Datacenter(settings, hosts=1, namespace=ns) as datacenter:
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                yield datacenter


async def test_a_host_provisions_from_a_private_registry_and_records_the_digest(
    client: Client, settings: Settings, dc: Datacenter, auth_registry: Registry, tmp_path: Path
) -> None:
    assert dc.image is not None
    lay = Layout(tmp_path / "layout")
    desc = lay.manifest([(dc.image.path.read_bytes(), OCTET)], disktype="raw")
    lay.tag("v1", desc)
    await asyncio.to_thread(push, lay, "v1", auth_registry, "lifecycle/os")
    secret = dockerconfig(tmp_path, auth_registry.host, REGISTRY_USER, REGISTRY_PASSWORD)
    host = dc.host(0, image=ImageSpec(url=url(auth_registry, "lifecycle/os:v1"), oci_auth=secret))
    await operations.apply(client, host, settings)
    st = await wait_status(client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type)
    assert st.error_type is None, st.error_message
    assert st.provisioning.image == host.spec.image, "status keeps the spec's image (the tag)..."
    assert st.provisioning.image_digest == f"oci://{auth_registry.host}/lifecycle/os@{desc['digest']}", (
        "...and records the manifest it resolved to"
    )
    with dc.emulated[0].disk_path.open("rb") as f:
        assert f.read(dc.image.size) == dc.image.path.read_bytes()
    steps = await step_histories(client, host.ref.workflow_id)
    [staged] = activity_results(steps, OCI_STAGE, OciStaged)
    assert not (dc.settings.boot_dir / urlsplit(staged.url).path.lstrip("/")).exists(), (
        "the blob's grant is withdrawn once the image is written"
    )
    await assert_no_secret_in_histories(client, [REGISTRY_PASSWORD], host.ref.workflow_id, at_least=3)
    assert_no_secret_in(st, [REGISTRY_PASSWORD], "the host's status")
