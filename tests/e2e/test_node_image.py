"""The node image (testbed/node_image.py, issue 23) boots and is ready for `kubeadm
join`: the agent's config drive written after it, cloud-init's userData prints from inside the
booted OS what the join relies on (checked here from the serial console):

- containerd running with its CRI plugin loaded (cgroups through systemd);
- the kubelet and kubeadm at the test bed control plane's exact version;
- IP forwarding and bridged traffic through iptables on (br_netfilter loaded at boot);
- the CNI plugins where containerd looks for them, and the kubelet enabled (waiting for the
  files `kubeadm join` writes).

Marker `node`: `make e2e-node`. `make e2e` deploys the same image and joins with it instead
(tests/e2e/test_node_join.py).
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
from test_os_image import boot, deployed_disk, wait_console

from activities.agent import configdrive
from activities.configdrive import build_iso, drive_files
from metalflow.api.models import HostRef
from testbed.kube import kubernetes_version
from testbed.os_image import MIB, OSImage

pytestmark = [pytest.mark.e2e, pytest.mark.node, pytest.mark.timeout(2400)]
GIB = 1 << 30
CHECKS = {
    "containerd": "systemctl is-active containerd",
    "cri": "ctr plugins ls | awk '$2 == \"cri\" {print $4}'",
    "cgroup": "grep -c 'SystemdCgroup = true' /etc/containerd/config.toml",
    "kubelet": "kubelet --version | tr ' ' _",
    "kubeadm": "kubeadm version -o short",
    "enabled": "systemctl is-enabled kubelet",
    "fwd": "sysctl -n net.ipv4.ip_forward",
    "brnf": "sysctl -n net.bridge.bridge-nf-call-iptables",
    "cni": "test -x /usr/lib/cni/bridge -a -x /usr/lib/cni/host-local && echo yes",
    "conntrack": "command -v conntrack >/dev/null && echo yes",
}


@pytest.fixture(scope="module")
def image(node_os: OSImage) -> OSImage:
    m = node_os.manifest
    print(
        f"\nnode image {node_os.dir.name}: raw {m['raw']['bytes'] / MIB:.0f} MiB, "  # type: ignore[index]
        f"qcow2 {m['qcow2']['bytes'] / MIB:.0f} MiB, built in {m['seconds']} s"  # type: ignore[index]
    )
    return node_os


def test_the_node_image_boots_ready_for_kubeadm_join(image: OSImage, tmp_path: Path) -> None:
    marker = f"METALFLOW-NODE-{uuid.uuid4().hex[:8]}"
    probe = " ".join(f"{name}=$({cmd})" for name, cmd in CHECKS.items())
    user_data = f'#cloud-config\nruncmd:\n  - echo "{marker} {probe} end" > /dev/ttyS0\n'
    host = HostRef(namespace="e2e", name=f"node-{uuid.uuid4().hex[:6]}")
    iso = build_iso(drive_files(host, user_data, None, {"uuid": f"iid-{marker}"}))
    dev = deployed_disk(image, tmp_path / "disk.raw", 4 * GIB)
    configdrive.write(dev, iso)
    console = tmp_path / "console.log"
    started = time.monotonic()
    proc = boot(dev.path, console)
    try:
        seen = wait_console(console, proc, f"{marker} containerd=", 1500)
        seen = wait_console(console, proc, " end", 60)
    finally:
        proc.kill()
        proc.wait()
    print(f"\nnode image: BIOS boot to the userData's checks {time.monotonic() - started:.0f} s")
    line = next(ln for ln in seen.splitlines() if ln.startswith(marker))
    got = dict(re.findall(r"(\w+)=(\S*)", line))
    version = kubernetes_version()
    assert got == {
        "containerd": "active",
        "cri": "ok",
        "cgroup": "1",
        "kubelet": f"Kubernetes_{version}",
        "kubeadm": version,
        "enabled": "enabled",
        "fwd": "1",
        "brnf": "1",
        "cni": "yes",
        "conntrack": "yes",
    }, line
