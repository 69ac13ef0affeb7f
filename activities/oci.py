"""OCI registries (control-plane side): the distribution API, credentials, and staging a blob.

`oci.stage` (on the control-plane queue) resolves `spec.image.url` — tag to manifest digest,
index to this host's manifest, manifest to its one layer (metalflow/api/oci.py) — checks the
blob is there, and leaves a grant file on the boot server naming the registry, the blob digest
and the credentials Secret by reference. The boot server then streams that one blob to the
agent, adding the credentials itself (worker/boot_server.py), so no registry secret reaches the
ramdisk, the workflow's input or history: the agent sees a plain URL and the layer's sha256.

The client is written here on `requests` (the project's HTTP library): the distribution API
needs only GET/HEAD with an Accept header and its two challenges, Basic and Bearer (a token
from the challenge's realm, for its service and a `repository:NAME:pull` scope).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import secrets as pysecrets
import shutil
from pathlib import Path
from typing import Any

import requests
from requests.utils import parse_dict_header
from temporalio import activity
from temporalio.exceptions import ApplicationError

from metalflow.api.errors import ErrorName, permanent, transient
from metalflow.api.models import ImageSpec, SecretRef
from metalflow.api.oci import (
    ACCEPT,
    INDEXES,
    OCI_REMOVE,
    OCI_STAGE,
    OciLayer,
    OciRemove,
    OciResolved,
    OciStaged,
    OciStageRequest,
    candidates,
    check_manifest_digest,
    disk_layer,
)
from metalflow.api.oci_ref import OciReference, parse_oci_url
from metalflow.runtime.secrets import resolve
from metalflow.runtime.settings import Settings, get_settings

TIMEOUT = (10, 60)
DOCKERCONFIG_KEYS = (".dockerconfigjson", ".dockercfg")

Credentials = tuple[str, str]


def base_url(registry: str) -> str:
    """Plain HTTP for a loopback registry (as Docker treats 127.0.0.0/8 and localhost), else HTTPS."""
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return f"{'http' if loopback else 'https'}://{registry}"


def _registry_key(key: str) -> str:
    """A docker config `auths` key (`host`, `https://host/v1/`, ...) as host[:port]."""
    return key.split("://", 1)[-1].split("/", 1)[0]


def credentials_for(ref: SecretRef | None, registry: str) -> Credentials | None:
    """The registry's username and password from a kubernetes.io/dockerconfigjson Secret."""
    if ref is None:
        return None
    data = resolve(ref).data
    key = next((k for k in DOCKERCONFIG_KEYS if k in data), None)
    if key is None:
        raise permanent(
            ErrorName.SECRET_INVALID,
            f"{ref.describe()} (image.ociAuthSecretName) has no .dockerconfigjson key; create it with "
            "kubectl create secret docker-registry NAME --docker-server=... --docker-username=... "
            "--docker-password=...",
        )
    try:
        doc = json.loads(data[key])
    except json.JSONDecodeError:
        raise permanent(
            ErrorName.SECRET_INVALID, f"key {key!r} of {ref.describe()} is not JSON; recreate the Secret"
        ) from None
    auths = doc.get("auths", {}) if key == ".dockerconfigjson" else doc
    entry = next((v for k, v in (auths or {}).items() if _registry_key(k) == registry), None)
    if not isinstance(entry, dict):
        have = sorted(_registry_key(k) for k in (auths or {}))
        raise permanent(
            ErrorName.SECRET_INVALID,
            f"{ref.describe()} has no credentials for registry {registry} (it has: {have or 'none'}); "
            "add an auths entry for it",
        )
    if entry.get("username") and entry.get("password"):
        return str(entry["username"]), str(entry["password"])
    try:
        user, sep, password = base64.b64decode(entry.get("auth") or "").decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        user, sep, password = "", "", ""
    if not sep or not user:
        raise permanent(
            ErrorName.SECRET_INVALID,
            f"{ref.describe()}'s entry for {registry} has no username/password or base64 'user:password' "
            "auth; recreate the Secret",
        )
    return user, password


def _basic(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


class Registry:
    """One repository of one registry, with the credentials (or none) to pull from it."""

    def __init__(
        self, ref: OciReference, creds: Credentials | None, session: requests.Session | None = None
    ) -> None:
        self.ref = ref
        self.creds = creds
        self.base = base_url(ref.registry)
        self.session = session or requests.Session()
        self._authorization: str | None = None

    def _fix_credentials(self) -> str:
        if self.creds is None:
            return "the registry wants credentials: set image.ociAuthSecretName to a dockerconfigjson Secret"
        return "fix the username/password for this registry in the image.ociAuthSecretName Secret"

    def _auth_error(self, status: int) -> Exception:
        return permanent(
            ErrorName.OCI_AUTH,
            f"image {self.ref}: the registry refused {'the' if self.creds else 'an anonymous'} pull "
            f"(HTTP {status}); {self._fix_credentials()}",
        )

    def _authenticate(self, challenge: str) -> str:
        """Answer a WWW-Authenticate challenge: Basic, or a Bearer token from its realm."""
        scheme, _, params_text = challenge.partition(" ")
        params = parse_dict_header(params_text)
        if scheme.lower() == "basic":
            if self.creds is None:
                raise self._auth_error(401)
            return _basic(self.creds)
        if scheme.lower() != "bearer" or not params.get("realm"):
            raise transient(
                "OciRegistryError", f"registry {self.ref.registry} sent an unknown challenge {scheme!r}"
            )
        query = {"scope": f"repository:{self.ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {"Authorization": _basic(self.creds)} if self.creds else {}
        try:
            resp = self.session.get(params["realm"], params=query, headers=headers, timeout=TIMEOUT)
        except requests.RequestException as err:
            raise transient("OciRegistryError", f"token service of {self.ref.registry}: {err}") from None
        if resp.status_code in (401, 403):
            raise self._auth_error(resp.status_code)
        if resp.status_code != 200:
            raise transient(
                "OciRegistryError", f"token service of {self.ref.registry} answered {resp.status_code}"
            )
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise transient("OciRegistryError", f"token service of {self.ref.registry} sent no token")
        return f"Bearer {token}"

    def get(
        self, path: str, accept: str | None = None, stream: bool = False, head: bool = False
    ) -> requests.Response:
        """GET (or HEAD) /v2/<repository>/<path>, answering one auth challenge; errors typed."""
        url = f"{self.base}/v2/{self.ref.repository}/{path}"
        for attempt in range(2):
            headers = {"Accept": accept} if accept else {}
            if self._authorization:
                headers["Authorization"] = self._authorization
            try:
                resp = self.session.request(
                    "HEAD" if head else "GET", url, headers=headers, stream=stream, timeout=TIMEOUT
                )
            except requests.RequestException as err:
                raise transient(
                    "OciRegistryError", f"cannot reach registry {self.ref.registry}: {err}"
                ) from None
            if resp.status_code == 401 and attempt == 0:
                resp.close()
                self._authorization = self._authenticate(resp.headers.get("WWW-Authenticate", ""))
                continue
            break
        if resp.status_code in (401, 403):
            resp.close()
            raise self._auth_error(resp.status_code)
        if resp.status_code == 404:
            resp.close()
            what = "blob" if path.startswith("blobs/") else "tag or manifest"
            raise permanent(
                ErrorName.OCI_NOT_FOUND,
                f"image {self.ref}: the registry has no such repository or {what} "
                f"({path.split('/', 1)[1]}); fix spec.image.url (repository, tag or digest)",
            )
        if resp.status_code >= 400:
            resp.close()
            raise transient(
                "OciRegistryError", f"registry {self.ref.registry} answered {resp.status_code} for {path}"
            )
        return resp

    def manifest(self, reference: str) -> tuple[dict[str, Any], str, str]:
        """(the document, its media type, its sha256 digest); a digest reference is verified."""
        resp = self.get(f"manifests/{reference}", accept=ACCEPT)
        body = resp.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        check_manifest_digest(self.ref, reference, digest)
        # by tag: the digest the registry says it serves must be the one the bytes have
        check_manifest_digest(self.ref, resp.headers.get("Docker-Content-Digest", ""), digest)
        try:
            doc = json.loads(body)
        except json.JSONDecodeError:
            raise permanent(
                ErrorName.OCI_NOT_DISK_IMAGE, f"image {self.ref}: manifest {reference} is not JSON"
            ) from None
        media_type = doc.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0]
        return doc, media_type, digest

    def blob(self, digest: str) -> requests.Response:
        """The layer, streamed (the registry may redirect to storage: requests drops our auth then)."""
        return self.get(f"blobs/{digest}", stream=True)


def resolve_image(image: ImageSpec, architecture: str, registry: Registry) -> OciResolved:
    """Tag -> manifest digest; index -> this architecture's disk-image manifest -> its one layer."""
    ref = registry.ref
    doc, media_type, digest = registry.manifest(ref.reference)
    if media_type in INDEXES or ("manifests" in doc and "layers" not in doc):
        refused: ApplicationError | None = None
        for cand in candidates(doc, ref, architecture):
            sub, _, sub_digest = registry.manifest(cand.digest)
            try:
                layer = disk_layer(sub, ref, cand.format)
            except ApplicationError as err:  # a container image among the candidates: try the next
                if err.type != ErrorName.OCI_NOT_DISK_IMAGE:
                    raise
                refused = err
                continue
            return _resolved(image, ref, sub_digest, layer)
        assert refused is not None
        raise refused
    return _resolved(image, ref, digest, disk_layer(doc, ref))


def _resolved(image: ImageSpec, ref: OciReference, digest: str, layer: OciLayer) -> OciResolved:
    return OciResolved(image=image.url, manifest_digest=digest, pinned_url=ref.pinned(digest), layer=layer)


def registry_for(image: ImageSpec) -> Registry:
    ref = parse_oci_url(image.url)
    return Registry(ref, credentials_for(image.oci_auth, ref.registry))


# ---- staging on the boot server ----
def _grants(settings: Settings) -> Path:
    return Path(settings.boot_dir) / "oci"


def grant_path(boot_dir: Path, host_id: str, name: str) -> Path | None:
    """The grant file behind /oci/<host id>/<name>, or None when the name could escape the directory."""
    root = (Path(boot_dir) / "oci").resolve()
    path = (root / host_id / name).resolve()
    if path.parent.parent != root or not name.endswith(".json"):
        return None
    return path


@activity.defn(name=OCI_STAGE)
def stage_oci(req: OciStageRequest) -> OciStaged:
    """Resolve the image and let the boot server hand its one blob to this attempt's agent."""
    registry = registry_for(req.image)
    resolved = resolve_image(req.image, req.architecture, registry)
    registry.get(f"blobs/{resolved.layer.digest}", head=True).close()  # there, and we may read it
    settings = get_settings()
    host_dir = _grants(settings) / req.host.host_id
    host_dir.mkdir(parents=True, exist_ok=True)
    attempt = req.attempt or activity.info().workflow_run_id
    mine = sorted(host_dir.glob(f"{attempt}.*.json"))
    name = mine[0].name if mine else f"{attempt}.{pysecrets.token_urlsafe(16)}.json"
    for stale in host_dir.glob("*.json"):  # a host deploys once at a time: older attempts' grants go
        if stale.name != name:
            stale.unlink(missing_ok=True)
    grant = {
        "image": req.image.url,
        "registry": registry.ref.registry,
        "repository": registry.ref.repository,
        "digest": resolved.layer.digest,
        "auth": req.image.oci_auth.model_dump(mode="json") if req.image.oci_auth else None,
    }
    tmp = host_dir / (name + ".tmp")
    tmp.write_text(json.dumps(grant))
    tmp.replace(host_dir / name)
    url = f"{settings.agent_boot_server}/oci/{req.host.host_id}/{name}"
    return OciStaged(url=url, resolved=resolved)


@activity.defn(name=OCI_REMOVE)
def remove_oci(req: OciRemove) -> None:
    """Withdraw an attempt's grant (or every grant of the host); idempotent."""
    host_dir = _grants(get_settings()) / req.host.host_id
    if req.attempt:
        for path in host_dir.glob(f"{req.attempt}.*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            host_dir.rmdir()
    else:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(host_dir)


def open_granted_blob(grant_file: Path) -> requests.Response:
    """The boot server's side: the blob a grant names, with the credentials resolved now."""
    grant = json.loads(grant_file.read_text())
    ref = OciReference(grant["registry"], grant["repository"], None, grant["digest"])
    auth = SecretRef.model_validate(grant["auth"]) if grant.get("auth") else None
    return Registry(ref, credentials_for(auth, ref.registry)).blob(grant["digest"])


ACTIVITIES = [stage_oci, remove_oci]
