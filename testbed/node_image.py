"""The node image (issue 23): the real OS image plus what a Kubernetes node needs to join.

    python -m testbed.node_image        # build (cached), print the paths, sizes and versions

testbed/os_image.py's recipe, plus:
- Debian's containerd (cgroups through systemd, as the kubelet kubeadm configures expects; the
  CNI plugins from Debian's containernetworking-plugins in /usr/lib/cni) and what kubeadm's
  preflight and the kubelet call (conntrack, iptables, ethtool, socat, ebtables);
- the kubelet and kubeadm built here at the test bed control plane's exact version
  (scripts/build-kube.sh), the kubelet's systemd unit and kubeadm's drop-in (the environment
  files `kubeadm join` writes: kubeadm-flags.env, config.yaml, bootstrap-kubelet.conf), enabled;
- one CNI network (bridge + host-local) so the runtime reports its network ready with no add-on;
- overlay and br_netfilter loaded at boot, IP forwarding and bridged traffic through iptables on.

No container image is inside: the Node needs none to turn Ready (the pause image is pulled only
when a pod runs, and no registry with it is reachable here).
Cached as `${METALFLOW_CACHE}/node-image/<key>`: the key covers the Debian root, the added files
and the kubelet/kubeadm binaries' hashes.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import cache

from testbed.debian_image import DebianImage
from testbed.kube import kube_binaries, kubernetes_version
from testbed.os_image import DPKG_EXCLUDES, HOOKS, MIB, PACKAGES, Added, OSImage, Recipe, os_image

NODE_PACKAGES = (
    "containerd",
    "containernetworking-plugins",
    "conntrack",
    "iptables",
    "ethtool",
    "socat",
    "ebtables",
)
POD_SUBNET = "10.244.0.0/24"  # the node's own pods (the bridge network is node-local)

KUBELET_UNIT = """\
[Unit]
Description=kubelet: the Kubernetes node agent (metalflow node image)
Wants=network-online.target containerd.service
After=network-online.target containerd.service

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
RestartSec=5
StartLimitInterval=0

[Install]
WantedBy=multi-user.target
"""
# The contract kubeadm keeps with the kubelet's unit: `kubeadm join` writes these files, the
# unit reads them; until then the kubelet exits and systemd starts it again.
KUBEADM_DROP_IN = """\
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
--kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS \
$KUBELET_EXTRA_ARGS
"""
CONTAINERD_CONFIG = """\
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "/etc/cni/net.d"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"""
CNI_CONFLIST = json.dumps(
    {
        "cniVersion": "1.0.0",
        "name": "metalflow-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    },
    indent=1,
)


@cache
def node_recipe() -> Recipe:
    kube, _ = kube_binaries()
    unit = "etc/systemd/system/kubelet.service"
    return Recipe(
        "node-image",
        DebianImage(
            name="node-image", packages=PACKAGES + NODE_PACKAGES, hooks=HOOKS, dpkg_excludes=DPKG_EXCLUDES
        ),
        added=(
            Added("usr/bin/kubelet", source=kube / "kubelet", mode=0o755),
            Added("usr/bin/kubeadm", source=kube / "kubeadm", mode=0o755),
            Added(unit, text=KUBELET_UNIT),
            Added("etc/systemd/system/kubelet.service.d/10-kubeadm.conf", text=KUBEADM_DROP_IN),
            Added("etc/systemd/system/multi-user.target.wants/kubelet.service", link="/" + unit),
            Added("etc/containerd/config.toml", text=CONTAINERD_CONFIG),
            Added("etc/cni/net.d/10-metalflow-node.conflist", text=CNI_CONFLIST + "\n"),
            Added("etc/modules-load.d/kubernetes.conf", text="overlay\nbr_netfilter\n"),
            Added(
                "etc/sysctl.d/90-kubernetes.conf",
                text="net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n",
            ),
        ),
    )


def node_image() -> OSImage:
    """The cached node image, built on first use (the OS image's steps plus containerd)."""
    return os_image(node_recipe())


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    started = time.monotonic()
    img = node_image()
    m = img.manifest
    print(f"{img.dir}\n  raw   {m['raw']['bytes'] / MIB:.0f} MiB  sha256 {img.raw_sha256}")  # type: ignore[index]
    print(f"  qcow2 {m['qcow2']['bytes'] / MIB:.0f} MiB  sha256 {img.qcow2_sha256}")  # type: ignore[index]
    print(
        f"  kubelet/kubeadm {kubernetes_version()}; kernel {img.kernel_version}; built in {m['seconds']} s"
        f" (this call {time.monotonic() - started:.1f} s)"
    )


if __name__ == "__main__":
    main()
