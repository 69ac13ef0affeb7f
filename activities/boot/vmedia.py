"""Per-host virtual-media ISO: the base deploy ISO re-mastered with one host's configuration.

The base ISO (`python -m testbed.ramdisk` builds it next to kernel and initrd) boots by BIOS
(isolinux) and UEFI (an El Torito EFI image holding GRUB); both boot loaders read their
configuration from the ISO's file system (/isolinux/isolinux.cfg, /boot/grub/grub.cfg). A
host's ISO is the base with those two files replaced, their kernel command lines carrying the
host's `metalflow.*` arguments (what its iPXE script would say), its boot's agent token in
/metalflow/agent-token (and the boot server's HTTPS CA in /metalflow/boot-ca.pem), and, when
the host has preprovisioning network data, /metalflow/network_data.json that the ramdisk's init
applies instead of DHCP. `xorriso -indev base -outdev new -boot_image any replay` copies the
base and its boot records without rebuilding anything (well under a second for the ramdisk's ISO).

Each ISO is written to a temporary name and renamed, under
`<boot_dir>/images/vmedia/<host id>/<random name>.iso`: the boot server serves it at an
unguessable URL (no index) for the BMC, a new one per boot, the host's older ones deleted;
`remove_host_isos` deletes them when the host leaves the ramdisk. That URL is a bearer URL to the
boot's agent token (as any virtual-media image is to what it carries): it is in history (sealed
when payloads are encrypted) and lives for one boot.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from activities.boot.render import render
from metalflow.api.boot import Architecture
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import HostRef
from metalflow.runtime.settings import Settings

ISOLINUX_CFG = "/isolinux/isolinux.cfg"
GRUB_CFG = "/boot/grub/grub.cfg"
NETWORK_DATA = "/metalflow/network_data.json"
# This boot's agent token (activities/boot/agent_tokens.py): the ramdisk's init keeps it in /run.
AGENT_TOKEN = "/metalflow/agent-token"
BOOT_CA = "/metalflow/boot-ca.pem"  # the CA of the boot server's HTTPS (settings.boot_server_ca)
# The ramdisk's init looks for the boot medium (and network_data.json on it) when it sees this.
MEDIUM_ARG = "metalflow.medium=iso"


def base_iso(settings: Settings, arch: Architecture) -> Path:
    """The setting (default <boot_dir>/deploy.iso); another architecture's has its suffix
    (deploy-aarch64.iso), as its kernel and initrd do."""
    path = settings.deploy_iso or settings.boot_dir / "deploy.iso"
    return path.with_name(f"{path.stem}{arch.suffix}{path.suffix}")


def host_dir(settings: Settings, host: HostRef) -> Path:
    return settings.boot_dir / "images" / "vmedia" / host.host_id


def host_kernel_args(host: HostRef, settings: Settings, mac: str | None) -> str:
    """The host's kernel command line: the iPXE script's arguments, plus the medium marker."""
    args = [
        settings.kernel_args,
        f"metalflow.host_id={host.host_id}",
        f"metalflow.temporal={settings.agent_temporal_address or settings.temporal_address}",
        f"metalflow.namespace={settings.temporal_namespace}",
        f"metalflow.tls={1 if settings.agent_temporal_tls else 0}",
    ]
    if settings.agent_temporal_tls and settings.agent_temporal_tls_ca_url:
        args.append(f"metalflow.tls_ca={settings.agent_temporal_tls_ca_url}")
    if settings.agent_temporal_tls and settings.agent_temporal_tls_server_name:
        args.append(f"metalflow.tls_server_name={settings.agent_temporal_tls_server_name}")
    args.append(f"metalflow.task_queue={host.agent_task_queue}")
    # the agent streams its log to the boot server (worker/agent_logs.py), as a PXE host's does
    args.append(f"metalflow.log_url={settings.boot_server_url.rstrip('/')}/agent-log/{host.host_id}")
    args.append(f"metalflow.boot_server={settings.agent_boot_server}")  # where the token goes
    if mac:
        args.append(f"BOOTIF=01-{mac.lower().replace(':', '-')}")
    args.append(MEDIUM_ARG)
    return " ".join(a for a in args if a)


def boot_configs(kernel_args: str, title: str) -> dict[str, str]:
    """The two boot loaders' configuration files (ISO path -> text) for one command line."""
    return {
        ISOLINUX_CFG: render("vmedia-isolinux.cfg.j2", kernel_args=kernel_args, title=title),
        GRUB_CFG: render("vmedia-grub.cfg.j2", kernel_args=kernel_args, title=title),
    }


def xorriso() -> str:
    found = shutil.which("xorriso")
    if found is None:
        raise permanent(
            ErrorName.DEPLOY_ISO_MISSING,
            "xorriso is not installed on this worker; virtual-media hosts' ISOs are made with it "
            "(Debian: apt-get install xorriso)",
        )
    return found


def remaster(base: Path, out: Path, files: dict[str, bytes]) -> None:
    """`base` copied to `out` (atomically) with `files` (ISO path -> content) added or replaced;
    its El Torito boot records are replayed unchanged."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="metalflow-vmedia-") as staging:
        argv = [xorriso(), "-no_rc", "-indev", str(base), "-outdev", str(tmp), "-boot_image", "any", "replay"]
        for n, (iso_path, content) in enumerate(sorted(files.items())):
            src = Path(staging) / str(n)
            src.write_bytes(content)
            argv += ["-map", str(src), iso_path]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"xorriso could not re-master {base}: {tail}")  # retryable: disk, load
    tmp.chmod(0o644)
    tmp.replace(out)


def make_host_iso(
    settings: Settings,
    arch: Architecture,
    host: HostRef,
    mac: str | None,
    network_data: dict[str, Any] | None,
    agent_token: str = "",
) -> str:
    """The host's ISO for this boot; returns the URL the BMC fetches it from."""
    base = base_iso(settings, arch)
    if not base.is_file():
        raise permanent(
            ErrorName.DEPLOY_ISO_MISSING,
            f"{host.namespace}/{host.name}: the base deploy ISO {base} does not exist; build it with "
            "`python -m testbed.ramdisk --out DIR` and set METALFLOW_DEPLOY_ISO=DIR/deploy.iso "
            "(default: deploy.iso next to the kernel in the boot directory; another architecture's "
            "named like its kernel, e.g. deploy-aarch64.iso)",
        )
    files = {
        path: text.encode()
        for path, text in boot_configs(host_kernel_args(host, settings, mac), host.host_id).items()
    }
    if network_data is not None:
        files[NETWORK_DATA] = json.dumps(network_data, indent=1, sort_keys=True).encode()
    if agent_token:
        files[AGENT_TOKEN] = agent_token.encode()
    if settings.boot_server_ca is not None:  # the boot server's HTTPS CA, from the trusted medium
        files[BOOT_CA] = settings.boot_server_ca.read_bytes()
    directory = host_dir(settings, host)
    name = f"{secrets.token_urlsafe(24)}.iso"
    remaster(base, directory / name, files)
    for old in directory.glob("*.iso"):  # earlier boots' ISOs: nobody fetches them any more
        if old.name != name:
            old.unlink(missing_ok=True)
    base_url = (settings.vmedia_base_url or settings.boot_server_url).rstrip("/")
    return f"{base_url}/images/vmedia/{host.host_id}/{name}"


def remove_host_isos(settings: Settings, host: HostRef) -> int:
    """Delete the host's ISOs (and half-written ones); how many ISOs there were."""
    directory = host_dir(settings, host)
    if not directory.is_dir():
        return 0
    count = len(list(directory.glob("*.iso")))
    shutil.rmtree(directory, ignore_errors=True)
    return count
