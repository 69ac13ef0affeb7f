"""`metalflow dnsmasq`: the boot network's DHCP/TFTP server, configured from metalflow's settings.

The base config is rendered from the same template the tests check with `dnsmasq --test`;
per-host entries appear in dhcp-hostsdir as the worker writes them (dnsmasq picks new files
up by inotify), so the worker and dnsmasq may live in different containers sharing a volume.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from activities.boot.dnsmasq import BootNetwork, base_config, hosts_dir
from metalflow.runtime.settings import Settings


def dnsmasq_binary() -> str:
    found = shutil.which("dnsmasq") or next(
        (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if Path(p).exists()), None
    )
    if found is None:
        raise ValueError("dnsmasq is not installed: apt-get install dnsmasq-base")
    return found


def write_config(net: BootNetwork, settings: Settings, path: Path) -> Path:
    hosts_dir(settings).mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(base_config(net, settings))
    return path


def run_dnsmasq(net: BootNetwork, settings: Settings, conf: Path, test_only: bool) -> int:
    """Check the config (`--test`), or replace this process with dnsmasq in the foreground."""
    write_config(net, settings, conf)
    argv = [dnsmasq_binary(), f"--conf-file={conf}"]
    if test_only:
        return subprocess.run([*argv, "--test"], check=False).returncode
    os.execv(argv[0], [*argv, "--keep-in-foreground", "--log-facility=-"])
    return 0  # not reached
