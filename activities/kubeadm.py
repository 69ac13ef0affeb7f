"""kubeadm join: bootstrap token, CA hash, join user-data, and waiting for the Node.

The token is created in the target cluster's kube-system as a bootstrap-token Secret and
written only into Secrets (the token Secret and the rendered user-data); workflows see
references. The CA hash is the SHA-256 of the cluster CA's SubjectPublicKeyInfo, as
`kubeadm join --discovery-token-ca-cert-hash` expects.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets as pysecrets
import string
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jinja2 import Environment, PackageLoader, StrictUndefined
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio import activity

from activities.join_reports import JoinReportStore, reason
from metalflow.api.errors import ErrorName, permanent, transient
from metalflow.api.join import (
    KUBEADM_CLEANUP,
    KUBEADM_LEAVE,
    KUBEADM_PREPARE_JOIN,
    KUBEADM_WAIT_NODE,
    JoinPlan,
    JoinRequest,
    LeaveRequest,
    LeaveResult,
    NodeInfo,
    WaitNodeRequest,
)
from metalflow.api.models import HostRef, JoinSpec, SecretRef, Taint
from metalflow.runtime.kube import api_client, api_client_from_kubeconfig
from metalflow.runtime.secrets import load_yaml, resolve, secret_key
from metalflow.runtime.settings import get_settings

HOST_LABEL = "metalflow.io/host"
TOKEN_TTL = timedelta(hours=24)
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits
_templates = Environment(
    loader=PackageLoader("activities", "templates"), undefined=StrictUndefined, keep_trailing_newline=True
)


def _name(obj: Any) -> str:
    """metadata.name of an API object (the client types metadata as optional)."""
    return str(obj.metadata.name) if obj.metadata and obj.metadata.name else ""


def provider_id(ref: HostRef) -> str:
    return f"metalflow://{ref.namespace}/{ref.name}"


def ca_cert_hash(ca_pem: bytes) -> str:
    """`sha256:<hex>` of the CA certificate's public key (SubjectPublicKeyInfo, DER)."""
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


@contextmanager
def _cluster(ref: SecretRef) -> Iterator[k8s.ApiClient]:
    """A client for the target cluster (REF: the Secret with its kubeconfig). Not reaching it
    (refused, reset, timed out) is a typed failure Temporal retries, whose message names the
    server, not a bare urllib3 error."""
    kubeconfig = resolve(ref).require("kubeconfig", ref)
    with api_client_from_kubeconfig(kubeconfig) as api:
        try:
            yield api
        except urllib3.exceptions.HTTPError as err:
            raise transient(
                "ClusterUnreachable", f"cannot reach the target cluster {api.configuration.host}: {err}"
            ) from None


def _certificate_key(join: JoinSpec) -> str:
    return resolve(join.kubeconfig).data.get("certificateKey", "") if join.control_plane else ""


def _cluster_info(core: k8s.CoreV1Api) -> tuple[str, bytes]:
    """The API endpoint and CA certificate, from kube-public/cluster-info as kubeadm publishes it."""
    try:
        cm = core.read_namespaced_config_map("cluster-info", "kube-public")
    except ApiException as exc:
        if exc.status == 404:
            raise permanent(
                ErrorName.CLUSTER_INFO_MISSING,
                "the target cluster has no kube-public/cluster-info ConfigMap; run "
                "`kubeadm init phase bootstrap-token` on a control-plane node to publish it",
            ) from None
        raise
    kubeconfig = yaml.safe_load((cm.data or {}).get("kubeconfig", "") or "{}")
    try:
        cluster = kubeconfig["clusters"][0]["cluster"]
        return cluster["server"], base64.b64decode(cluster["certificate-authority-data"])
    except (KeyError, IndexError, TypeError):
        raise permanent(
            ErrorName.CLUSTER_INFO_MISSING,
            "kube-public/cluster-info has no kubeconfig with server and certificate-authority-data",
        ) from None


def _find_or_create_token(core: k8s.CoreV1Api, ref: HostRef) -> tuple[str, str]:
    """One live bootstrap token per host: reuse it on a retried attempt, else create it."""
    label = f"{HOST_LABEL}={ref.host_id}"
    now = datetime.now(UTC)
    for secret in core.list_namespaced_secret("kube-system", label_selector=label).items:
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        expires = data.get("expiration")
        if expires and datetime.fromisoformat(expires.replace("Z", "+00:00")) > now + timedelta(hours=1):
            return data["token-id"], _name(secret)
    token_id = "".join(pysecrets.choice(_TOKEN_ALPHABET) for _ in range(6))
    token_secret = "".join(pysecrets.choice(_TOKEN_ALPHABET) for _ in range(16))
    name = f"bootstrap-token-{token_id}"
    body = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name=name, namespace="kube-system", labels={HOST_LABEL: ref.host_id}),
        type="bootstrap.kubernetes.io/token",
        string_data={
            "token-id": token_id,
            "token-secret": token_secret,
            "expiration": (now + TOKEN_TTL).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
            "description": f"metalflow join of {ref.namespace}/{ref.name}",
        },
    )
    core.create_namespaced_secret("kube-system", body)
    return token_id, name


def render_user_data(
    ref: HostRef,
    join: JoinSpec,
    endpoint: str,
    token: str,
    ca_hash: str,
    user_data: str | None,
    certificate_key: str = "",
    user_data_source: str = "spec.userData",
    taints: Sequence[Taint] = (),
    report_url: str = "",
    report_token: str = "",
) -> str:
    """cloud-init that runs kubeadm join, merged with the user's own #cloud-config
    (`user_data_source` names where that came from in errors, see `secret_key`). kubeadm runs
    through metalflow's join script, which reports a failure to REPORT_URL (see join_reports)."""
    if join.control_plane and not certificate_key:
        raise permanent(
            ErrorName.SECRET_INVALID,
            f"spec.join.controlPlane needs key certificateKey in {join.kubeconfig.describe()} "
            "(from `kubeadm init phase upload-certs --upload-certs`)",
        )
    rendered = _templates.get_template("kubeadm-join.yaml.j2").render(
        endpoint=endpoint.removeprefix("https://"),
        token=token,
        ca_hash=ca_hash,
        node_name=ref.name,
        provider_id=provider_id(ref),
        control_plane=join.control_plane,
        node_labels=join.node_labels,
        taints=list(taints),  # metal3's spec.taints: kubeadm registers the Node with them
        certificate_key=certificate_key,
        report={"url": report_url, "token": report_token},
        join_script=_templates.get_template("metalflow-kubeadm-join.py.j2").render(),
    )
    ours: dict[str, Any] = yaml.safe_load(rendered)
    if user_data:
        cloud_config = user_data.lstrip().startswith("#cloud-config")
        theirs = load_yaml(user_data, user_data_source) if cloud_config else None
        if not isinstance(theirs, dict):
            raise permanent(
                ErrorName.SECRET_INVALID,
                "spec.userData must be #cloud-config YAML to be merged with the kubeadm join; "
                "move scripts into its runcmd or write_files",
            )
        for key, value in theirs.items():
            if isinstance(value, list) and isinstance(ours.get(key), list):
                ours[key] = [*value, *ours[key]]  # the user's commands run before the join
            else:
                ours.setdefault(key, value)
    return "#cloud-config\n" + yaml.safe_dump(ours, sort_keys=False)


def _store_user_data(ref: HostRef, content: str) -> SecretRef:
    """Keep the rendered user-data (it holds the token) in a Secret or a 0600 local file."""
    settings = get_settings()
    name = f"{ref.name}-join-user-data"
    if settings.publish_status_to_kubernetes:
        with api_client(settings) as api:
            core = k8s.CoreV1Api(api)
            body = k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name=name, namespace=ref.namespace),
                string_data={"userData": content},
            )
            try:
                core.create_namespaced_secret(ref.namespace, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                core.replace_namespaced_secret(name, ref.namespace, body)
        return SecretRef(name=name, namespace=ref.namespace)
    path = Path(settings.state_dir).resolve() / "secrets" / ref.namespace / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({"userData": content}, f)
    return SecretRef(name=name, namespace=ref.namespace, path=str(path))


@activity.defn(name=KUBEADM_PREPARE_JOIN)
def prepare_join(req: JoinRequest) -> JoinPlan:
    with _cluster(req.join.kubeconfig) as api:
        core = k8s.CoreV1Api(api)
        endpoint, ca_pem = _cluster_info(core)
        ca_hash = ca_cert_hash(ca_pem)
        token_id, token_secret_name = _find_or_create_token(core, req.host)
        secret = core.read_namespaced_secret(token_secret_name, "kube-system")
        token = f"{token_id}.{base64.b64decode((secret.data or {})['token-secret']).decode()}"
    own, source = None, "spec.userData"
    if req.user_data is not None:
        resolved = resolve(req.user_data)
        key = "userData" if resolved.data.get("userData") else "value"
        own, source = resolved.data.get(key), secret_key(req.user_data, key)
    settings = get_settings()
    report_token = JoinReportStore(settings.boot_dir).expect(req.host.host_id)
    report_url = f"{settings.boot_server_url.rstrip('/')}/join-report/{req.host.host_id}"
    rendered = render_user_data(
        req.host,
        req.join,
        endpoint,
        token,
        ca_hash,
        own,
        _certificate_key(req.join),
        source,
        req.taints,
        report_url,
        report_token,
    )
    user_data = _store_user_data(req.host, rendered)
    activity.logger.info("join of %s prepared with token %s", req.host.host_id, token_id)
    return JoinPlan(
        token_secret=SecretRef(name=token_secret_name, namespace="kube-system"),
        user_data=user_data,
        ca_cert_hash=ca_hash,
        api_server_endpoint=endpoint,
    )


def _ready(node: k8s.V1Node) -> tuple[bool, str]:
    """Whether the Node is Ready, and what its conditions say when it is not: the Ready
    condition's reason and message (the kubelet's own words: "container runtime network not
    ready: ... cni plugin not initialized") and any other condition that is not normal."""
    conditions = (node.status.conditions if node.status else None) or []
    ready = next((c for c in conditions if c.type == "Ready"), None)
    if ready is None:
        return False, "the Node has no Ready condition yet"
    seen = [f"Ready={ready.status} ({ready.reason or ''}: {ready.message or ''})"]
    # MemoryPressure, DiskPressure, PIDPressure, NetworkUnavailable: True is the abnormal value
    seen += [
        f"{c.type}={c.status} ({c.reason or ''})"
        for c in conditions
        if c.type != "Ready" and c.status == "True"
    ]
    return ready.status == "True", "; ".join(seen)


def _token_expired(core: k8s.CoreV1Api, certs: k8s.CertificatesV1Api, token_secret: SecretRef) -> str:
    """The bootstrap token's id if it expired (or the token cleaner already deleted it) before
    the kubelet used it; '' while it can still be used or already was (a CSR made with it)."""
    token_id = token_secret.name.removeprefix("bootstrap-token-")
    try:
        secret = core.read_namespaced_secret(token_secret.name, "kube-system")
        raw = (secret.data or {}).get("expiration")
        expires = base64.b64decode(raw).decode() if raw else ""
        if not expires or datetime.fromisoformat(expires.replace("Z", "+00:00")) > datetime.now(UTC):
            return ""
    except ApiException as exc:
        if exc.status != 404:
            raise
    user = f"system:bootstrap:{token_id}"
    if any(c.spec.username == user for c in certs.list_certificate_signing_request().items):
        return ""  # the kubelet has its certificate: the token did its job
    return token_id


@activity.defn(name=KUBEADM_WAIT_NODE)
def wait_node(req: WaitNodeRequest) -> NodeInfo:
    """Wait for the host's Node to register and turn Ready; then label it and set providerID.
    A bootstrap token that expired before the kubelet used it fails the wait at once: kubeadm
    on the host cannot join with it, and the step's retry writes user-data with a new one."""
    pid = provider_id(req.host)
    deadline = time.monotonic() + req.join.timeout_seconds
    last = "the Node has not registered"
    reports = JoinReportStore(get_settings().boot_dir)
    with _cluster(req.join.kubeconfig) as api:
        core, certs = k8s.CoreV1Api(api), k8s.CertificatesV1Api(api)
        while True:
            activity.heartbeat(last)
            node = next(
                (
                    n
                    for n in core.list_node().items
                    if (n.spec and n.spec.provider_id == pid) or _name(n) == req.host.name
                ),
                None,
            )
            if node is not None:
                ready, last = _ready(node)
                if ready:
                    patch: dict[str, Any] = {
                        "metadata": {"labels": {**req.join.node_labels, HOST_LABEL: req.host.host_id}}
                    }
                    if not (node.spec and node.spec.provider_id):
                        patch["spec"] = {"providerID": pid}
                    core.patch_node(_name(node), patch)
                    return NodeInfo(name=_name(node), ready=True, provider_id=pid)
            # kubeadm failed on the host (a Node it registered all the same, not Ready, is named)
            if (report := reports.read(req.host.host_id)) is not None:
                raise permanent(
                    ErrorName.KUBEADM_JOIN_FAILED,
                    f"kubeadm join failed on {req.host.namespace}/{req.host.name} (exit {report.exit_code}): "
                    f"{reason(report.output)}" + (f"; the Node: {last}" if node is not None else ""),
                )
            if node is None and req.token_secret is not None:
                expired = _token_expired(core, certs, req.token_secret)
                if expired:
                    raise permanent(
                        ErrorName.JOIN_TOKEN_EXPIRED,
                        f"the bootstrap token {expired} in {req.host.namespace}/{req.host.name}'s user-data "
                        "expired before its kubelet registered a Node: "
                        "token expired; a new one is issued on retry",
                    )
            if time.monotonic() > deadline:
                raise permanent(
                    ErrorName.NODE_NOT_READY,
                    f"Node for {req.host.namespace}/{req.host.name} not Ready after "
                    f"{req.join.timeout_seconds}s; last seen: {last}",
                )
            time.sleep(2)


@activity.defn(name=KUBEADM_CLEANUP)
def cleanup_token(req: WaitNodeRequest) -> None:
    if req.token_secret is None:
        return
    with _cluster(req.join.kubeconfig) as api:
        try:
            k8s.CoreV1Api(api).delete_namespaced_secret(req.token_secret.name, "kube-system")
        except ApiException as exc:
            if exc.status != 404:
                raise


# ---- leaving the cluster ----

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
STUCK_GRACE = timedelta(seconds=30)  # past a pod's deletion deadline on a Node that is not Ready


def _left_alone(pod: k8s.V1Pod) -> str:
    """Why a drain leaves POD on the Node ('' if it is evicted): as `kubectl drain
    --ignore-daemonsets` and Cluster API's drain, DaemonSet pods (their controller would put
    them back) and mirror pods (the kubelet's static pods) stay until the Node is deleted."""
    meta = pod.metadata or k8s.V1ObjectMeta()
    if MIRROR_ANNOTATION in (meta.annotations or {}):
        return "mirror pod"
    if any(o.controller and o.kind == "DaemonSet" for o in meta.owner_references or []):
        return "DaemonSet"
    return ""


def _eviction_refused(exc: ApiException) -> str:
    try:
        return str(yaml.safe_load(exc.body or "{}").get("message") or exc.reason)
    except (yaml.YAMLError, AttributeError):
        return str(exc.reason)


def _drain_pass(core: k8s.CoreV1Api, node: str, ready: bool, evicted: set[str], left: set[str]) -> list[str]:
    """One pass over the Node's pods: evict what may go; what is still there, and why."""
    waiting = []
    now = datetime.now(UTC)
    for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items:
        meta = pod.metadata or k8s.V1ObjectMeta()
        pod_name, namespace = str(meta.name), str(meta.namespace)
        key = f"{namespace}/{pod_name}"
        why = _left_alone(pod)
        if why:
            left.add(f"{key} ({why})")
            continue
        if meta.deletion_timestamp is not None:
            # Only the kubelet confirms a pod stopped: on a Node that is not Ready nothing will,
            # and the pod garbage collector removes such pods once the Node is deleted.
            if ready or now < meta.deletion_timestamp + STUCK_GRACE:
                waiting.append(f"{key} (terminating)")
            continue
        body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=pod_name, namespace=namespace))
        try:
            core.create_namespaced_pod_eviction(pod_name, namespace, body)
            evicted.add(key)
            waiting.append(f"{key} (evicted)")
        except ApiException as exc:
            if exc.status == 404:
                continue
            if exc.status != 429:  # 429: a PodDisruptionBudget says not now; asked again next pass
                raise
            waiting.append(f"{key} (eviction refused: {_eviction_refused(exc)})")
    return waiting


def host_node(core: k8s.CoreV1Api, req: LeaveRequest) -> k8s.V1Node | None:
    """The host's Node, or None: gone, or a Node of that name that is not this host's (another
    providerID and no metalflow.io/host label of it), which is left alone."""
    try:
        node = core.read_node(req.node.name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    labels = (node.metadata.labels if node.metadata else None) or {}
    spec = node.spec or k8s.V1NodeSpec()
    if (spec.provider_id or "") != req.node.provider_id and labels.get(HOST_LABEL) != req.host.host_id:
        activity.logger.warning(
            "Node %s is not %s's (providerID %s): left alone",
            req.node.name,
            req.host.host_id,
            spec.provider_id,
        )
        return None
    return node


def drain(core: k8s.CoreV1Api, name: str, timeout_seconds: int) -> LeaveResult:
    """Cordon Node NAME and evict every pod but DaemonSet and mirror pods through the Eviction API
    (PodDisruptionBudgets honoured: a refused eviction is asked again until the timeout); wait
    until the evicted pods are gone."""
    node = core.read_node(name)
    if not (node.spec and node.spec.unschedulable):
        core.patch_node(name, {"spec": {"unschedulable": True}})
    deadline = time.monotonic() + timeout_seconds
    evicted: set[str] = set()
    left: set[str] = set()
    while True:
        ready, _ = _ready(core.read_node(name))
        waiting = _drain_pass(core, name, ready, evicted, left)
        if not waiting:
            return LeaveResult(evicted=sorted(evicted), left_alone=sorted(left))
        activity.heartbeat(f"{len(waiting)} pods still on Node {name}")
        if time.monotonic() > deadline:
            raise permanent(
                ErrorName.NODE_DRAIN_TIMEOUT,
                f"Node {name} not drained after {timeout_seconds}s (spec.join.drainTimeoutSeconds): "
                f"{', '.join(waiting[:10])}; the disk is untouched. Let these pods go (a "
                "PodDisruptionBudget that allows no disruption, a pod that does not stop) and retry",
            )
        time.sleep(2)


@activity.defn(name=KUBEADM_LEAVE)
def leave(req: LeaveRequest) -> LeaveResult:
    """Drain and delete the host's Node, as `kubectl drain --ignore-daemonsets --force
    --delete-emptydir-data` then `kubectl delete node` would (Cluster API's choice). Another
    machine's Node of that name is left alone."""
    with _cluster(req.node.kubeconfig) as api:
        core = k8s.CoreV1Api(api)
        if host_node(core, req) is None:
            return LeaveResult()
        result = drain(core, req.node.name, req.drain_timeout_seconds)
        try:
            core.delete_node(req.node.name)
        except ApiException as exc:
            if exc.status != 404:
                raise
    activity.logger.info("Node %s drained (%d pods evicted) and deleted", req.node.name, len(result.evicted))
    return result.model_copy(update={"deleted": True})


ACTIVITIES = [prepare_join, wait_node, cleanup_token, leave]
