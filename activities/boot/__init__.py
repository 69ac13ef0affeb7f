"""Network boot activities: per-host iPXE script and dnsmasq entry, written atomically.

dnsmasq reads `dhcp-hostsdir` itself when files change; a SIGHUP (when its pid file is
configured) makes it drop cached entries at once, e.g. after cleanup.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from temporalio import activity

from activities.boot.render import mac_file_name, render, write_atomically
from metalflow.contracts import (
    BOOT_CLEANUP,
    BOOT_PREPARE,
    BootPrepareRequest,
    BootPrepareResult,
    ErrorName,
)
from metalflow.errors import permanent
from metalflow.models import HostRef
from metalflow.settings import Settings, get_settings


def hosts_dir(settings: Settings) -> Path:
    return settings.dnsmasq_hosts_dir or settings.boot_dir / "dnsmasq" / "hosts"


def ipxe_dir(settings: Settings) -> Path:
    return settings.boot_dir / "boot"


def reload_dnsmasq(settings: Settings) -> bool:
    pid_file = settings.dnsmasq_pid_file
    if pid_file is None or not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
    except (ValueError, ProcessLookupError):
        return False
    return True


def ipxe_script(req: BootPrepareRequest, settings: Settings) -> str:
    ref = req.host
    return render(
        "host.ipxe.j2",
        purpose=req.purpose.value,
        host_id=ref.host_id,
        mac=req.boot_mac_address or "",
        base_url=settings.boot_server_url.rstrip("/"),
        kernel=settings.kernel_name,
        initrd=settings.initrd_name,
        kernel_args=settings.kernel_args,
        temporal=settings.agent_temporal_address or settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=settings.agent_temporal_tls,
        task_queue=ref.agent_task_queue,
    )


@activity.defn(name=BOOT_PREPARE)
def prepare_boot(req: BootPrepareRequest) -> BootPrepareResult:
    settings = get_settings()
    base = settings.boot_server_url.rstrip("/")
    if not req.boot_mac_address:
        raise permanent(
            ErrorName.INVALID_SPEC,
            f"{req.host.namespace}/{req.host.name} has no spec.bootMACAddress; network boot needs the MAC "
            "of the NIC that PXE-boots (or use a *-virtualmedia:// BMC address)",
        )
    script = ipxe_script(req, settings)
    mac_name = mac_file_name(req.boot_mac_address)
    write_atomically(ipxe_dir(settings) / f"{mac_name}.ipxe", script)
    write_atomically(ipxe_dir(settings) / f"{req.host.host_id}.ipxe", script)
    changed = write_atomically(
        hosts_dir(settings) / req.host.host_id,
        render("dnsmasq-host.j2", mac=req.boot_mac_address, hostname=req.host.name, ip=""),
    )
    if changed:
        reload_dnsmasq(settings)
    return BootPrepareResult(
        ipxe_script_url=f"{base}/boot/{mac_name}.ipxe",
        iso_url=f"{base}/images/deploy.iso",
        dhcp_entry_written=True,
    )


@activity.defn(name=BOOT_CLEANUP)
def cleanup_boot(host: HostRef) -> None:
    settings = get_settings()
    entry = hosts_dir(settings) / host.host_id
    script = ipxe_dir(settings) / f"{host.host_id}.ipxe"
    mac_line = entry.read_text().split(",", 1)[0] if entry.exists() else ""
    with contextlib.suppress(FileNotFoundError):
        entry.unlink()
    with contextlib.suppress(FileNotFoundError):
        script.unlink()
    if mac_line:
        with contextlib.suppress(FileNotFoundError):
            (ipxe_dir(settings) / f"{mac_file_name(mac_line)}.ipxe").unlink()
        reload_dnsmasq(settings)


ACTIVITIES = [prepare_boot, cleanup_boot]
