"""A real OCI registry on loopback (Debian's `docker-registry`, distribution 2.8) and a real
client to push to it (Debian's `skopeo`, from an OCI image layout written here).

Disk-image artefacts are laid out as Ironic and `oras push` make them: an image manifest with an
empty config and one layer (the disk image, raw or qcow2, possibly gzip-compressed), the
`disktype` annotation on the manifest, and optionally an image index with one manifest per
platform. A container image (several layers) is laid out too, for the refusal.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from testbed.processes import Process, free_port, wait_for

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
CONTAINER_CONFIG = "application/vnd.oci.image.config.v1+json"
TAR_LAYER = "application/vnd.oci.image.layer.v1.tar"


def tools_missing() -> list[str]:
    return [t for t in ("docker-registry", "skopeo", "htpasswd") if shutil.which(t) is None]


@dataclass
class Registry:
    process: Process
    host: str  # 127.0.0.1:PORT
    storage: Path
    user: str | None = None
    password: str | None = None
    tokens: TokenService | None = None

    def stop(self) -> None:
        self.process.stop()
        if self.tokens is not None:
            self.tokens.stop()

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob on disk (distribution's filesystem driver layout)."""
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def start_registry(
    workdir: Path, user: str | None = None, password: str | None = None, tokens: TokenService | None = None
) -> Registry:
    """docker-registry on 127.0.0.1:<free port>, storage under workdir; htpasswd (bcrypt) auth
    when a user is given."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = tokens.config() if tokens else ""
    if user is not None and tokens is None:
        htpasswd = workdir / "htpasswd"
        subprocess.run(
            ["htpasswd", "-Bbc", str(htpasswd), user, password or ""], check=True, capture_output=True
        )
        auth = f"auth:\n  htpasswd:\n    realm: metalflow-test\n    path: {htpasswd}\n"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    proc = Process("docker-registry", ["docker-registry", "serve", str(config)], workdir / "registry.log")

    def answers() -> bool:
        proc.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                return True
        except urllib.error.HTTPError as err:
            return err.code == 401  # up, and asking for credentials
        except OSError:
            return False

    wait_for(answers, 30, "docker-registry to answer /v2/")
    return Registry(proc, f"127.0.0.1:{port}", workdir / "storage", user, password, tokens)


@dataclass
class Layout:
    """An OCI image layout directory (`oci:` for skopeo) being written."""

    path: Path
    refs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def blob(self, data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.path / "blobs/sha256" / digest.split(":")[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def manifest(
        self,
        layers: Sequence[tuple[bytes, str]],
        disktype: str | None = None,
        container: bool = False,
    ) -> dict[str, Any]:
        """An image manifest; returns its descriptor (mediaType, digest, size)."""
        config = (
            {"mediaType": CONTAINER_CONFIG, **self.blob(b'{"architecture":"amd64","os":"linux"}')}
            if (container)
            else {"mediaType": EMPTY_CONFIG, **self.blob(b"{}")}
        )
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config,
            "layers": [{"mediaType": mt, **self.blob(data)} for data, mt in layers],
        }
        if not container:
            doc["artifactType"] = "application/vnd.metalflow.disk-image"
        if disktype:
            doc["annotations"] = {"disktype": disktype}
        return {"mediaType": MANIFEST, **self.blob(json.dumps(doc).encode())}

    def index(self, entries: Sequence[tuple[dict[str, Any], str, str | None]]) -> dict[str, Any]:
        """An image index of (manifest descriptor, architecture, disktype) entries."""
        manifests = []
        for desc, arch, disktype in entries:
            entry = {**desc, "platform": {"architecture": arch, "os": "linux"}}
            if disktype:
                entry["annotations"] = {"disktype": disktype}
            manifests.append(entry)
        doc = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
        return {"mediaType": INDEX, **self.blob(json.dumps(doc).encode())}

    def tag(self, name: str, desc: dict[str, Any]) -> None:
        self.refs[name] = desc
        manifests = [
            {**d, "annotations": {"org.opencontainers.image.ref.name": n}} for n, d in self.refs.items()
        ]
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def push(layout: Layout, tag: str, registry: Registry, repository: str) -> None:
    """`skopeo copy` the layout's tag to REGISTRY/REPOSITORY:TAG, digests kept (an index with all
    its manifests)."""
    creds = ["--dest-creds", f"{registry.user}:{registry.password}"] if registry.user else []
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            *creds,
            f"oci:{layout.path}:{tag}",
            f"docker://{registry.host}/{repository}:{tag}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


# ---- a token service, for the Bearer flow ----
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """The registry's token realm (distribution's token auth), run by the test bed: it checks a
    user's password (Basic) and issues an RS256 JWT for the scope asked, signed by a self-made
    certificate the registry trusts (`rootcertbundle`; the certificate rides in the `x5c` header).

    No Debian package ships a token server; the registry that verifies the tokens is the real one.
    """

    def __init__(self, workdir: Path, user: str, password: str, service: str = "metalflow-test-registry"):
        self.user, self.password, self.service = user, password, service
        self.issuer = "metalflow-test-issuer"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metalflow test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = workdir / "token-issuer.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.issued: list[str] = []  # scopes granted, for tests to see the flow happened
        service_self = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization", "")
                given = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
                if given != f"{service_self.user}:{service_self.password}":
                    self.send_response(401)
                    self.end_headers()
                    return
                scopes = query.get("scope", [])
                body = json.dumps({"token": service_self.token(scopes)}).encode()
                service_self.issued.extend(scopes)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, scopes: Sequence[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":", 2)
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": self.user,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": _b64url(os.urandom(12)),
            "access": access,
        }
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def config(self) -> str:
        """The registry's `auth:` section."""
        return (
            f"auth:\n  token:\n    realm: {self.realm}\n    service: {self.service}\n"
            f"    issuer: {self.issuer}\n    rootcertbundle: {self.bundle}\n"
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
